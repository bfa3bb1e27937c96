package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Network namespaces for the partition test: each server runs in its own
// namespace with one veth whose host side is on a bridge; taking that host
// side down cuts the namespace off from every other one (and from the
// host) for real, whatever protocol. iptables, nft and tc do not work on
// the machines these tests run on; namespaces and links do.
//
// The test reaches into a namespace, also while it is cut off, through a
// forwarder: the test binary itself, started inside the namespace with
// nsForwardEnv set, listening on a unix socket (a file, which namespaces do
// not separate) and connecting, for each client, to the TCP address the
// client names in its first line.

const nsForwardEnv = "HEADROOM_TEST_NS_FORWARD"

// runNSForwarder runs the forwarder and reports true when this process was
// started as one; it returns false at once otherwise.
func runNSForwarder() bool {
	sock := os.Getenv(nsForwardEnv)
	if sock == "" {
		return false
	}
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "forwarder listening on", sock)
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "forwarder:", err)
			os.Exit(1)
		}
		go forward(c)
	}
}

func forward(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := readLine(c)
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	up, err := net.DialTimeout("tcp", line, 3*time.Second)
	if err != nil {
		fmt.Fprintf(c, "error %v\n", err)
		return
	}
	defer up.Close()
	io.WriteString(c, "ok\n")
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	<-done
}

// readLine reads up to a newline one byte at a time, so nothing after it is
// consumed.
func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 256 {
		if _, err := io.ReadFull(r, one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", errors.New("line too long")
}

// netLab is a bridge in a namespace of its own (the "switch") and server
// namespaces plugged into it, plus one link from the host. The bridge has
// its own namespace because the host's firewall filters bridged traffic
// (br_netfilter with a FORWARD policy of DROP, as Docker leaves it) while a
// new namespace starts with an empty firewall that accepts everything.
type netLab struct {
	t        testing.TB
	suffix   string // unique per run: in every name
	prefix   string // "10.R.S": the host is .1, namespace i is .(10+i)
	sw       string // the switch namespace
	bridge   string
	hostVeth string // the host's end of its link to the switch
	nss      []*netNS
}

type netNS struct {
	lab    *netLab
	name   string // namespace name
	swVeth string // the veth end on the bridge, in the switch namespace
	nsVeth string // the veth end inside the namespace
	ip     string
	sock   string // the forwarder's unix socket
	fwd    *proc
	client *http.Client
}

// requireNetNS skips the test (or fails it under CI=true) when network
// namespaces cannot be made here.
func requireNetNS(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "not root"
	default:
		if _, err := exec.LookPath("ip"); err != nil {
			why = "the ip command (iproute2) is missing"
		} else if _, err := os.Stat("/proc/self/ns/net"); err != nil {
			why = "no network namespaces on this system"
		} else {
			// Root in a container may still lack the right to make them.
			var r [4]byte
			rand.Read(r[:])
			probe := "hr-probe-" + hex.EncodeToString(r[:])
			if err := ipCmd("netns", "add", probe); err != nil {
				why = err.Error()
			} else {
				ipCmd("netns", "del", probe)
			}
		}
	}
	if why == "" {
		return
	}
	msg := "partition test needs network namespaces (root and iproute2's ip on Linux): " + why
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
	}
	t.Skip(msg)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func ipCmds(t testing.TB, cmds ...[]string) {
	t.Helper()
	for _, args := range cmds {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
}

// newNetLab makes the switch, the host's link and n namespaces, each with
// an address and a forwarder. Everything is removed when the test ends,
// also on failure: processes started after newNetLab are killed first (test
// cleanups run last-registered first), then the forwarders, the links and
// the namespaces.
func newNetLab(t testing.TB, n int) *netLab {
	t.Helper()
	var r [3]byte
	rand.Read(r[:])
	lab := &netLab{t: t, suffix: hex.EncodeToString(r[:])}
	// A 10.R.S.0/24 not already on this host.
	addrs, _ := exec.Command("ip", "-4", "-o", "addr").Output()
	routes, _ := exec.Command("ip", "-4", "route").Output()
	for i := 0; ; i++ {
		var b [2]byte
		rand.Read(b[:])
		p := fmt.Sprintf("10.%d.%d", 16+int(b[0])%224, b[1])
		if !strings.Contains(string(addrs)+string(routes), p+".") || i > 50 {
			lab.prefix = p
			break
		}
	}
	// Interface names are at most 15 characters.
	lab.sw = fmt.Sprintf("hr-%s-%d-sw", lab.suffix, os.Getpid())
	lab.bridge = "hrb" + lab.suffix
	lab.hostVeth = "hrh" + lab.suffix
	t.Cleanup(lab.teardown)
	ipCmds(t,
		[]string{"netns", "add", lab.sw},
		[]string{"-n", lab.sw, "link", "add", lab.bridge, "type", "bridge"},
		[]string{"-n", lab.sw, "link", "set", lab.bridge, "up"},
		[]string{"link", "add", lab.hostVeth, "type", "veth", "peer", "name", "hrs" + lab.suffix + "0", "netns", lab.sw},
		[]string{"-n", lab.sw, "link", "set", "hrs" + lab.suffix + "0", "master", lab.bridge},
		[]string{"-n", lab.sw, "link", "set", "hrs" + lab.suffix + "0", "up"},
		[]string{"addr", "add", lab.prefix + ".1/24", "dev", lab.hostVeth},
		[]string{"link", "set", lab.hostVeth, "up"},
	)
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		ns := &netNS{
			lab:    lab,
			name:   fmt.Sprintf("hr-%s-%d-%d", lab.suffix, os.Getpid(), i),
			swVeth: fmt.Sprintf("hrs%s%d", lab.suffix, i),
			nsVeth: fmt.Sprintf("hrn%s%d", lab.suffix, i),
			ip:     fmt.Sprintf("%s.%d", lab.prefix, 10+i),
			sock:   filepath.Join(dir, fmt.Sprintf("fwd%d.sock", i)),
		}
		lab.nss = append(lab.nss, ns)
		ipCmds(t,
			[]string{"netns", "add", ns.name},
			[]string{"link", "add", ns.swVeth, "netns", lab.sw, "type", "veth", "peer", "name", ns.nsVeth, "netns", ns.name},
			[]string{"-n", lab.sw, "link", "set", ns.swVeth, "master", lab.bridge},
			[]string{"-n", lab.sw, "link", "set", ns.swVeth, "up"},
			[]string{"-n", ns.name, "addr", "add", ns.ip + "/24", "dev", ns.nsVeth},
			[]string{"-n", ns.name, "link", "set", ns.nsVeth, "up"},
			[]string{"-n", ns.name, "link", "set", "lo", "up"},
		)
		ns.fwd = startArgv(t, "forwarder-"+ns.name, []string{"ip", "netns", "exec", ns.name, self}, []string{nsForwardEnv + "=" + ns.sock})
		ns.client = &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				DialContext:         ns.dial,
				MaxIdleConnsPerHost: 8,
				IdleConnTimeout:     30 * time.Second,
			},
		}
	}
	for _, ns := range lab.nss {
		waitFor(t, 10*time.Second, "forwarder of "+ns.name, func() error {
			c, err := net.Dial("unix", ns.sock)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	t.Logf("network lab: switch namespace %s (bridge %s), host %s.1 on %s, namespaces %s",
		lab.sw, lab.bridge, lab.prefix, lab.hostVeth, strings.Join(lab.names(), " "))
	return lab
}

func (lab *netLab) names() []string {
	var s []string
	for _, ns := range lab.nss {
		s = append(s, ns.name+"="+ns.ip)
	}
	return s
}

// teardown removes what newNetLab made; errors are only logged.
func (lab *netLab) teardown() {
	for _, ns := range lab.nss {
		if ns.fwd != nil {
			ns.fwd.kill()
		}
	}
	var errs []string
	gone := func(err error) bool {
		return err == nil || strings.Contains(err.Error(), "Cannot find") || strings.Contains(err.Error(), "No such file")
	}
	// Deleting a namespace deletes the veth ends in it, and their peers.
	for _, ns := range lab.nss {
		if err := ipCmd("netns", "del", ns.name); !gone(err) {
			errs = append(errs, err.Error())
		}
	}
	if err := ipCmd("netns", "del", lab.sw); !gone(err) {
		errs = append(errs, err.Error())
	}
	if err := ipCmd("link", "del", lab.hostVeth); !gone(err) {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		lab.t.Logf("network lab teardown: %s", strings.Join(errs, "; "))
	}
}

// cut takes the namespace's link to the bridge down: nothing reaches it or
// leaves it but through its forwarder. heal brings the link up again.
func (ns *netNS) cut() error  { return ipCmd("-n", ns.lab.sw, "link", "set", ns.swVeth, "down") }
func (ns *netNS) heal() error { return ipCmd("-n", ns.lab.sw, "link", "set", ns.swVeth, "up") }

// dial connects to addr from inside the namespace, through its forwarder.
func (ns *netNS) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", ns.sock)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := io.WriteString(c, addr+"\n"); err != nil {
		c.Close()
		return nil, err
	}
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if line != "ok" {
		c.Close()
		return nil, fmt.Errorf("from namespace %s to %s: %s", ns.name, addr, line)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// cmd runs argv inside the namespace: the argv for a proc.
func (ns *netNS) cmd(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns.name}, argv...)
}
