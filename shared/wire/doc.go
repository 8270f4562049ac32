// Package wire holds the JSON types exchanged with the kache client and between
// kache-planner's own binaries.
//
// The kache types follow kache-protocol.md sections 1.1-1.5 exactly: the
// client's serde rules decide what is accepted and what is emitted. Fields that
// kache does not know are additive extensions (a kache client ignores unknown
// keys); they are never repurposed.
package wire
