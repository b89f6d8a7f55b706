// goapid: a grpc-go stand-in for Talos's apid, serving only machine.MachineService/EtcdSnapshot.
//
// Why it exists: the sandbox's other apid (sandbox/apid.py, sandbox/node_apid.py) is Python h2, which packs many
// 1 KiB messages into each DATA frame. A real apid is grpc-go, whose loopy writer puts each message in a DATA frame of
// its own (grpc-go v1.33.3, Debian bookworm's: internal/transport/controlbuf.go:830-935 processData takes one queued
// dataFrame per message and cuts it at http2MaxFrameLen = 16384, internal/transport/http_util.go:47; http2_server.go
// :910-947 Write queues one dataFrame per SendMsg; the same at v1.82.1, the version Talos v1.13.9 pins,
// controlbuf.go:933-1016). This project's client is interop-tested and measured against this server
// (tests/adapters/talosapi/test_goapid_interop.py, bench/client_cpu.py).
//
// Built offline from Debian's packages (golang-go, golang-google-grpc-dev, golang-google-protobuf-dev) in GOPATH mode
// over /usr/share/gocode with modules off: scripts/ensure-go-grpc.sh. No protoc: a grpc.ServiceDesc with a hand-written
// stream handler and a raw-bytes codec (apid itself proxies with a raw codec: siderolabs/talos v1.13.9
// internal/app/apid/service.go, grpc.ForceServerCodecV2(proxy.Codec())), messages written with protowire.
//
// What it does, as machined/apid do at siderolabs/talos v1.13.9:
//   - TLS: a client certificate is required and must chain to the OS CA (-ca); its extended key usage must be exactly
//     [clientAuth] (internal/app/apid/service.go:172-190 verifyExtKeyUsage), else the handshake fails.
//   - RBAC: the certificate's Organization is the role; EtcdSnapshot is allowed for os:admin, os:operator and
//     os:etcd:backup (internal/app/machined/pkg/system/services/machined.go:77); anyone else gets PermissionDenied
//     "not authorized" (pkg/grpc/middleware/authz/authorizer.go:18).
//   - EtcdSnapshot (internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go:1956-1990): the snapshot is read
//     and sent in messages of at most 1024 bytes (pkg/chunker/stream/stream.go:49-52 Size 1024, :83-109 Read), each a
//     common.Data{bytes = 2} (api/common/common.proto: Data{Metadata metadata = 1; bytes bytes = 2}); machined sets
//     no metadata. A call that names a node in the `nodes` metadata is forwarded by apid, which appends
//     metadata{hostname = the target} to every message (internal/app/apid/pkg/backend/apid.go:172-180 AppendInfo);
//     here the addresses in -local are served that way, any other fails as an unreachable forward (Unavailable).
//   - The snapshot comes from the sandbox's etcd: `etcdctl snapshot save` into a private temporary directory (what
//     sandbox/apid.py does; Debian packages no etcd client library for Go in GOPATH form, and etcdctl writes the same
//     file machined's clientv3 Snapshot streams, with its sha256 trailer). -snapshot-file serves a file instead (the
//     bench's large snapshots, without growing etcd to a GiB).
//
// Faults for tests: -hang (accept, then send nothing until the client gives up: machined while etcd is down, its
// client waits with no deadline), -stall-after N (stop sending after N bytes), -throttle BYTES/s (a slow link),
// -fail MESSAGE (etcdctl's failure, returned as Unavailable "failed reading etcd snapshot: ...").
//
// Each call ends with one line on stderr: `call roles=... nodes=... outcome=... bytes=N frames=N err=...`, which
// tests read (e.g. outcome=canceled when the client went away: the server observed context canceled).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

const chunkSize = 1024 // pkg/chunker/stream/stream.go:51

var snapshotRoles = map[string]bool{"os:admin": true, "os:operator": true, "os:etcd:backup": true}

type config struct {
	label        string
	etcdctl      string
	endpoints    string
	snapshotFile string
	local        map[string]bool
	hang         bool
	stallAfter   int64
	throttle     int64
	fail         string
	faultsFile   string
}

// throttleNow is -throttle, or the sandbox node's `snapshot_throttle_bytes_per_second` fault when -faults names the
// sandbox's faults file (read at each call, as sandbox/node_apid.py applies it: the bench's slow link).
func (c *config) throttleNow() int64 {
	if c.faultsFile == "" {
		return c.throttle
	}
	body, err := ioutil.ReadFile(c.faultsFile)
	if err != nil {
		return c.throttle
	}
	var faults map[string]interface{}
	if json.Unmarshal(body, &faults) != nil {
		return c.throttle
	}
	if v, ok := faults["snapshot_throttle_bytes_per_second"].(float64); ok && v > 0 {
		return int64(v)
	}
	return c.throttle
}

// rawCodec passes messages through as bytes: the handler marshals common.Data itself with protowire.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

func (rawCodec) String() string { return "proto" }

// verifyExtKeyUsage: apid's rule (internal/app/apid/service.go:172-190): every non-CA certificate of the verified
// chain must have extended key usage exactly [clientAuth].
func verifyExtKeyUsage(_ [][]byte, chains [][]*x509.Certificate) error {
	if len(chains) == 0 {
		return errors.New("no verified chains")
	}
	for _, cert := range chains[0] {
		if cert.IsCA {
			continue
		}
		if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
			return fmt.Errorf("certificate %q is missing the client auth extended key usage", cert.Subject)
		}
	}
	return nil
}

func rolesOf(ctx context.Context) []string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0].Subject.Organization
}

// dataMessage is common.Data{bytes = piece} followed by suffix (serialized fields appended, as apid's AppendInfo).
func dataMessage(buf []byte, piece []byte, suffix []byte) []byte {
	buf = protowire.AppendTag(buf, 2, protowire.BytesType)
	buf = protowire.AppendBytes(buf, piece)
	return append(buf, suffix...)
}

// hostnameMetadata is common.Data.metadata = common.Metadata{hostname = name}, as serialized fields.
func hostnameMetadata(name string) []byte {
	var md []byte
	md = protowire.AppendTag(md, 1, protowire.BytesType)
	md = protowire.AppendString(md, name)
	var out []byte
	out = protowire.AppendTag(out, 1, protowire.BytesType)
	return protowire.AppendBytes(out, md)
}

type server struct{ cfg config }

func (s *server) etcdSnapshot(_ interface{}, stream grpc.ServerStream) (err error) {
	ctx := stream.Context()
	var req []byte
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	roles := rolesOf(ctx)
	var nodes []string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		nodes = md.Get("nodes")
	}
	var sent, frames int64
	outcome := "ok"
	defer func() {
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		log.Printf("call roles=%s nodes=%s outcome=%s bytes=%d frames=%d err=%q", strings.Join(roles, ","),
			strings.Join(nodes, ","), outcome, sent, frames, msg)
	}()

	allowed := false
	for _, r := range roles {
		allowed = allowed || snapshotRoles[r]
	}
	if !allowed {
		outcome = "denied"
		return status.Error(codes.PermissionDenied, "not authorized")
	}
	var suffix []byte
	if len(nodes) > 0 {
		if len(nodes) != 1 || !s.cfg.local[nodes[0]] {
			outcome = "forward-failed"
			return status.Errorf(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp %s:50000: i/o timeout\"", nodes[0])
		}
		suffix = hostnameMetadata(nodes[0])
	}
	if s.cfg.hang {
		outcome = "hang"
		<-ctx.Done()
		outcome = "canceled"
		return status.FromContextError(ctx.Err()).Err()
	}
	if s.cfg.fail != "" {
		outcome = "etcd-failed"
		return status.Errorf(codes.Unavailable, "failed reading etcd snapshot: %s", s.cfg.fail)
	}

	path := s.cfg.snapshotFile
	if path == "" {
		dir, derr := ioutil.TempDir("", "goapid-snap-")
		if derr != nil {
			return status.Errorf(codes.Internal, "temporary directory: %v", derr)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "db")
		cmd := exec.CommandContext(ctx, s.cfg.etcdctl, "--endpoints="+s.cfg.endpoints, "snapshot", "save", path)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, cerr := cmd.CombinedOutput()
		if cerr != nil {
			outcome = "etcd-failed"
			text := strings.TrimSpace(string(out))
			if len(text) > 300 {
				text = text[len(text)-300:]
			}
			return status.Errorf(codes.Unavailable, "failed reading etcd snapshot: %s", text)
		}
	}
	f, ferr := os.Open(path)
	if ferr != nil {
		return status.Errorf(codes.Unavailable, "failed reading etcd snapshot: %v", ferr)
	}
	defer f.Close()

	chunk := make([]byte, chunkSize)
	throttle := s.cfg.throttleNow()
	began := time.Now()
	for {
		n, rerr := f.Read(chunk)
		if n > 0 {
			if s.cfg.stallAfter > 0 && sent+int64(n) > s.cfg.stallAfter {
				outcome = "stalled"
				<-ctx.Done()
				outcome = "canceled"
				return status.FromContextError(ctx.Err()).Err()
			}
			// A new buffer per message: grpc-go may still hold the previous one (SendMsg returns once the message is
			// queued for the loopy writer; the raw codec does not copy), as machined marshals a new common.Data each.
			msg := dataMessage(make([]byte, 0, n+8+len(suffix)), chunk[:n], suffix)
			if serr := stream.SendMsg(&msg); serr != nil {
				if ctx.Err() != nil {
					outcome = "canceled"
					return status.FromContextError(ctx.Err()).Err()
				}
				outcome = "send-failed"
				return serr
			}
			sent += int64(n)
			frames++
			if throttle > 0 {
				if ahead := time.Duration(float64(sent)/float64(throttle)*float64(time.Second)) - time.Since(began); ahead > 5*time.Millisecond {
					select {
					case <-time.After(ahead):
					case <-ctx.Done():
						outcome = "canceled"
						return status.FromContextError(ctx.Err()).Err()
					}
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			outcome = "read-failed"
			return status.Errorf(codes.Unknown, "read error: %v", rerr)
		}
	}
}

func writeReady(path string, port int) error {
	body, _ := json.Marshal(map[string]int{"pid": os.Getpid(), "port": port})
	tmp := path + ".tmp"
	if err := ioutil.WriteFile(tmp, append(body, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func main() {
	var (
		listen, caFile, certFile, keyFile, ready, local string
		cfg                                               config
	)
	flag.StringVar(&cfg.label, "label", "goapid", "a name for this process (in its log and command line)")
	flag.StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on (loopback only)")
	flag.StringVar(&caFile, "ca", "", "the OS CA certificate (PEM): client certificates must chain to it")
	flag.StringVar(&certFile, "cert", "", "the server certificate (PEM)")
	flag.StringVar(&keyFile, "key", "", "the server key (PEM)")
	flag.StringVar(&ready, "ready", "", "write {pid, port} as JSON here once listening")
	flag.StringVar(&cfg.etcdctl, "etcdctl", "etcdctl", "etcdctl to take the snapshot with")
	flag.StringVar(&cfg.endpoints, "endpoints", "", "etcd client endpoint")
	flag.StringVar(&cfg.snapshotFile, "snapshot-file", "", "serve this file instead of a fresh etcd snapshot")
	flag.StringVar(&local, "local", "", "comma-separated addresses a `nodes` target may name (served as forwarded)")
	flag.BoolVar(&cfg.hang, "hang", false, "accept calls and send nothing until the client gives up")
	flag.Int64Var(&cfg.stallAfter, "stall-after", 0, "stop sending after this many snapshot bytes")
	flag.Int64Var(&cfg.throttle, "throttle", 0, "send at most this many snapshot bytes per second")
	flag.StringVar(&cfg.fail, "fail", "", "answer every call with this etcd failure (Unavailable)")
	flag.StringVar(&cfg.faultsFile, "faults", "", "the sandbox's faults file (JSON): its snapshot throttle applies")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix(cfg.label + " ")

	cfg.local = map[string]bool{}
	for _, a := range strings.Split(local, ",") {
		if a != "" {
			cfg.local[a] = true
		}
	}
	caPEM, err := ioutil.ReadFile(caFile)
	if err != nil {
		log.Fatalf("reading -ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatalf("-ca %s holds no PEM certificate", caFile)
	}
	certPEM, err := ioutil.ReadFile(certFile)
	if err != nil {
		log.Fatalf("reading -cert: %v", err)
	}
	keyPEM, err := ioutil.ReadFile(keyFile)
	if err != nil {
		log.Fatalf("reading -key: %v", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		log.Fatalf("server certificate: %v", err)
	}
	tlsConfig := &tls.Config{
		Certificates:          []tls.Certificate{pair},
		ClientAuth:            tls.RequireAndVerifyClientCert,
		ClientCAs:             pool,
		MinVersion:            tls.VersionTLS12,
		VerifyPeerCertificate: verifyExtKeyUsage,
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		log.Fatalf("listen %s: %v", listen, err)
	}
	s := &server{cfg: cfg}
	desc := grpc.ServiceDesc{
		ServiceName: "machine.MachineService",
		HandlerType: (*interface{})(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "EtcdSnapshot",
			Handler:       s.etcdSnapshot,
			ServerStreams: true,
		}},
		Metadata: "machine/machine.proto",
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)), grpc.CustomCodec(rawCodec{}))
	srv.RegisterService(&desc, s)
	port := lis.Addr().(*net.TCPAddr).Port
	if ready != "" {
		if err := writeReady(ready, port); err != nil {
			log.Fatalf("writing -ready: %v", err)
		}
	}
	log.Printf("serving machine.MachineService/EtcdSnapshot on %s (pid %d)", lis.Addr(), os.Getpid())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Stop()
	}()
	if err := srv.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
