// The pod sandbox's process, as Kubernetes' own pause image runs it: it holds the pod's
// namespaces, reaps the orphans that end up as its children, and exits on SIGINT or SIGTERM.
// Built static and run FROM scratch (scripts/kube-binaries, scripts/kube-cluster).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 16)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
