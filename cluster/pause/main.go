// Command pause holds a pod sandbox open for the test cluster (the role of
// registry.k8s.io/pause, which cannot be pulled here). It exits on SIGINT/SIGTERM and reaps
// children. Built by cluster/up.sh into localhost/pause:3.10.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			if pid, _ := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
