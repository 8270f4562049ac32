// Command etcd is etcd, built from the Go module proxy as the e2e API
// server's storage. It is a tool, kept out of the product's module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
