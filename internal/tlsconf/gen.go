package tlsconf

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Kind is what a certificate is for.
type Kind string

// Kinds of certificates.
const (
	KindServer Kind = "server" // names ServerName; server and client authentication
	KindAgent  Kind = "agent"  // names AgentName; client authentication
	KindCLI    Kind = "cli"    // names CLIName; client authentication
)

// CertOptions says what to put in a new certificate.
type CertOptions struct {
	// Kind is the certificate's role (ignored by NewCA).
	Kind Kind
	// CommonName. (Optional, default from Kind, or "headroom CA ...")
	CommonName string
	// DNS and IPs are subject alternative names beyond those of the kind
	// (a server certificate always names ServerName, "localhost" and
	// 127.0.0.1). (Optional)
	DNS []string
	IPs []net.IP
	// NotBefore and NotAfter bound the validity. (Required)
	NotBefore, NotAfter time.Time
}

// PEM is a certificate and its private key, PEM-encoded.
type PEM struct {
	Cert, Key []byte
}

// NewCA makes a self-signed certificate authority with an ECDSA P-256 key.
func NewCA(o CertOptions) (PEM, error) {
	if err := o.checkValidity(); err != nil {
		return PEM{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, err
	}
	serial, err := newSerial()
	if err != nil {
		return PEM{}, err
	}
	cn := o.CommonName
	if cn == "" {
		cn = "headroom CA " + hex.EncodeToString(serial.Bytes()[:4])
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"headroom"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return PEM{}, err
	}
	return encode(der, key)
}

// NewCert makes a certificate of kind o.Kind with an ECDSA P-256 key,
// signed by the CA given as PEM.
func NewCert(ca PEM, o CertOptions) (PEM, error) {
	if err := o.checkValidity(); err != nil {
		return PEM{}, err
	}
	caCert, caKey, err := parseCA(ca)
	if err != nil {
		return PEM{}, err
	}
	tmpl := &x509.Certificate{
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		DNSNames:              append([]string(nil), o.DNS...),
		IPAddresses:           append([]net.IP(nil), o.IPs...),
	}
	var name string
	switch o.Kind {
	case KindServer:
		name = ServerName
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = appendNew(tmpl.DNSNames, "localhost")
		if !containsIP(tmpl.IPAddresses, net.IPv4(127, 0, 0, 1)) {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IPv4(127, 0, 0, 1))
		}
	case KindAgent:
		name = AgentName
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case KindCLI:
		name = CLIName
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return PEM{}, fmt.Errorf("certificate kind %q: want server, agent or cli", o.Kind)
	}
	tmpl.DNSNames = append([]string{name}, removeAll(tmpl.DNSNames, name)...)
	tmpl.Subject = pkix.Name{CommonName: o.CommonName, Organization: []string{"headroom"}}
	if tmpl.Subject.CommonName == "" {
		tmpl.Subject.CommonName = name
	}
	if o.NotAfter.After(caCert.NotAfter) {
		return PEM{}, fmt.Errorf("the certificate would outlive its CA (which expires at %s)", caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return PEM{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return PEM{}, err
	}
	return encode(der, key)
}

func (o CertOptions) checkValidity() error {
	if o.NotBefore.IsZero() || o.NotAfter.IsZero() || !o.NotAfter.After(o.NotBefore) {
		return errors.New("a certificate needs a validity period that ends after it begins")
	}
	return nil
}

func parseCA(ca PEM) (*x509.Certificate, crypto.Signer, error) {
	cb, _ := pem.Decode(ca.Cert)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("CA certificate: no PEM certificate found")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, nil, errors.New("CA certificate: not a certificate authority")
	}
	kb, _ := pem.Decode(ca.Key)
	if kb == nil {
		return nil, nil, errors.New("CA key: no PEM key found")
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		return nil, nil, fmt.Errorf("CA key: a %q block; want a private key", kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("CA key: not a signing key")
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, errors.New("CA key does not match the CA certificate")
	}
	return cert, signer, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (PEM, error) {
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return PEM{}, err
	}
	return PEM{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
	}, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func appendNew(ss []string, s string) []string {
	for _, x := range ss {
		if x == s {
			return ss
		}
	}
	return append(ss, s)
}

func removeAll(ss []string, s string) []string {
	out := ss[:0:0]
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}
