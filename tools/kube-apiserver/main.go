// Command kube-apiserver is the Kubernetes API server, built from the Go
// module proxy for the e2e tests (leader election and chart installation
// against a real API server). It is a tool, kept out of the product's module.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
