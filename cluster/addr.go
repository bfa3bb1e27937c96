package cluster

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	sockaddr "github.com/hashicorp/go-sockaddr"
)

// AdvertiseAddr returns the host:port other machines should use to reach a
// listener bound to bind (host:port, normally the listener's own address
// after it bound, so that the port is real):
//
//   - with advertiseHost set (the --advertise-addr flag, a host name or an
//     IP, without a port) it is advertiseHost with bind's port;
//   - else, when bind's host is empty or unspecified (0.0.0.0, ::), it is
//     this machine's first private address (RFC 6890, preferring the
//     interface of the default route; a public one when there is no
//     private one) with bind's port, so a container started FROM scratch,
//     with no shell to work its address out, needs no flag;
//   - else it is bind unchanged.
//
// It fails on a malformed bind, port 0 (pass the bound address, not the
// requested one), an advertiseHost that carries a port or is unspecified,
// or when no usable address is found. It does no DNS lookups.
func AdvertiseAddr(bind, advertiseHost string) (string, error) {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return "", fmt.Errorf("cluster: address %q: %w", bind, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("cluster: address %q: want a port between 1 and 65535 (pass the bound listener's address)", bind)
	}
	h, err := advertiseHostFor(host, advertiseHost)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(h, port), nil
}

// advertiseHostFor is AdvertiseAddr without the port: the host others use
// for a listener bound to bindHost.
func advertiseHostFor(bindHost, advertiseHost string) (string, error) {
	if advertiseHost != "" {
		h := strings.TrimSuffix(strings.TrimPrefix(advertiseHost, "["), "]")
		ip := net.ParseIP(h)
		switch {
		case ip == nil && strings.Contains(h, ":"):
			return "", fmt.Errorf("cluster: advertise host %q: want a host name or an IP address without a port", advertiseHost)
		case ip == nil && !validHostName(h):
			return "", fmt.Errorf("cluster: advertise host %q is not a valid host name", advertiseHost)
		case ip != nil && ip.IsUnspecified():
			return "", fmt.Errorf("cluster: advertise host %q is not an address others can reach", advertiseHost)
		}
		return h, nil
	}
	if ip := net.ParseIP(bindHost); bindHost != "" && (ip == nil || !ip.IsUnspecified()) {
		return bindHost, nil
	}
	return machineAddr()
}

// machineAddr picks this machine's address for a listener bound to all
// interfaces: the private address of the default route's interface, else
// the first private address of any interface, else the public address of
// the default route's interface.
func machineAddr() (string, error) {
	if ip, err := sockaddr.GetPrivateIP(); err == nil && ip != "" {
		return ip, nil
	}
	if ips, err := sockaddr.GetPrivateIPs(); err == nil && ips != "" {
		return strings.Fields(ips)[0], nil
	}
	if ip, err := sockaddr.GetPublicIP(); err == nil && ip != "" {
		return ip, nil
	}
	return "", errors.New("cluster: listening on all interfaces and found no address to advertise; set an advertise address")
}

// validHostName accepts RFC 1123 host names (letters, digits, '-', '.').
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// resolveIP returns host as an IP, looking the name up when it is not one
// (memberlist needs IPs).
func resolveIP(host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("cluster: resolve %q: %v", host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}
