// CoreDNS with only the plugins the local cluster's Corefile uses (scripts/kube-cluster), the
// way CoreDNS documents building it with a chosen plugin set: each imported plugin registers
// itself, and the directive list sets their order.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	"github.com/coredns/coredns/coremain"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "health", "ready", "errors", "log", "loadbalance",
		"cache", "loop", "kubernetes", "forward",
	}
}

func main() { coremain.Run() }
