package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// certValidity is long enough for any test run; NotBefore is backdated by
// the same margin so a clock step during the run cannot invalidate it.
const certValidity = 24 * time.Hour

// serverTLS is what a TLS server is started with. The files are written
// once, so a restarted server presents the same certificate.
type serverTLS struct {
	roots                     *x509.CertPool
	caFile, certFile, keyFile string
}

// StartTLS is Start for a server that serves TLS only: the port that Addr
// and Port report is redis-server's tls-port, its plain port is disabled,
// and clients need no certificate. The certificate, signed by a CA made for
// this server alone, is valid for 127.0.0.1 and localhost; TLSConfig trusts
// it. Every method of Server, Restart included, speaks TLS to it.
func StartTLS(tb testing.TB, args ...string) *Server {
	tb.Helper()
	s := newServer(tb, args)
	t, err := writeTLSFiles(s.dir)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	s.tls = t
	s.start(tb, freePort)
	return s
}

// TLSConfig returns a new client config that trusts the server's CA, or nil
// for a server started without TLS. Callers may change it freely.
func (s *Server) TLSConfig() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return &tls.Config{
		RootCAs: s.tls.roots.Clone(),
		// The name a client derives from Addr, so a config used as is and
		// one whose ServerName the client fills in verify the same way.
		ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS12,
	}
}

// listenArgs are the redis-server arguments that make it listen on port.
func (s *Server) listenArgs(port int) []string {
	if s.tls == nil {
		return []string{"--port", strconv.Itoa(port)}
	}
	return []string{
		"--port", "0",
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", s.tls.certFile,
		"--tls-key-file", s.tls.keyFile,
		"--tls-ca-cert-file", s.tls.caFile,
		"--tls-auth-clients", "no",
	}
}

// writeTLSFiles makes a CA and a server certificate it signs, and writes
// them as PEM into dir.
func writeTLSFiles(dir string) (*serverTLS, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-certValidity),
		NotAfter:              now.Add(certValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-certValidity),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding server key: %w", err)
	}

	t := &serverTLS{
		roots:    x509.NewCertPool(),
		caFile:   filepath.Join(dir, "ca.crt"),
		certFile: filepath.Join(dir, "redis.crt"),
		keyFile:  filepath.Join(dir, "redis.key"),
	}
	t.roots.AddCert(ca)
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{
		{t.caFile, "CERTIFICATE", caDER},
		{t.certFile, "CERTIFICATE", der},
		{t.keyFile, "PRIVATE KEY", keyDER},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			return nil, err
		}
	}
	return t, nil
}
