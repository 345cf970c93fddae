// Command grpcpeer is grpc-go's proxyless xDS stack as a differential oracle: the same istiod
// (or any xDS server), the same bootstrap shape, the same Greeter method as the mesh's tests.
//
//	grpcpeer client -target xds:///host:port -n N [-header k=v]... [-name s] [-each k=v1,v2,...]
//	                [-hold K -hold-header k=v]
//	grpcpeer server -listen ip:port
//	grpcpeer csds -server ip:port
//	grpcpeer orca -listen ip:port -cpu F [-qps F]   (see orca.go)
//
// Both read the bootstrap from GRPC_XDS_BOOTSTRAP and use xDS credentials (TLS from the
// control plane's config, plaintext when it sends none). Messages are raw protobuf bytes
// (helloworld.HelloRequest/HelloReply have one string field each), so no generated code.
//
// The client prints one line: RESULT {"replies":{"<message>":n},"codes":{"<code>":n}}; with
// -each, one line per value instead: EACH <value> {...}, all on one connection. With -hold K,
// K calls carrying -hold-header are started first and left in flight (a test's backend holds
// them); the client prints HOLDING once they are started and reads a line from stdin (the
// test's "go", sent when its backends have them all) before its batch.
// The server also serves /bench.Echo/Unary (the bytes back) for the mTLS bench.
// The server answers SayHello with "<listen> /helloworld.Greeter/SayHello <peer id>\n" (the
// peer's SPIFFE ID from its verified certificate, else "-"), as the mesh's echo server does,
// and prints "SERVING" / "NOT_SERVING <why>" as its serving mode changes.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"

	csdspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"

	// Types that appear inside resources CSDS returns (xds_config), registered so protojson
	// can print them; grpc-go's xds package registers the rest.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"mesh.local/gocp/internal/raw"
)

// oneString encodes a message whose field 1 is the string s.
func oneString(s string) []byte {
	out := []byte{0x0a}
	n := len(s)
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	out = append(out, byte(n))
	return append(out, s...)
}

// stringField decodes field 1 of such a message.
func stringField(b []byte) string {
	if len(b) < 2 || b[0] != 0x0a {
		return ""
	}
	n, shift, i := 0, 0, 1
	for ; i < len(b); i++ {
		n |= int(b[i]&0x7f) << shift
		shift += 7
		if b[i] < 0x80 {
			i++
			break
		}
	}
	if i+n > len(b) {
		return ""
	}
	return string(b[i : i+n])
}

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ",") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func client(args []string) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	target := fs.String("target", "", "xds:///host:port")
	n := fs.Int("n", 1, "calls")
	name := fs.String("name", "a", "HelloRequest.name")
	var hs headers
	fs.Var(&hs, "header", "k=v request metadata (repeatable)")
	each := fs.String("each", "", "k=v1,v2,...: n calls per value of metadata k, one EACH line per value")
	hold := fs.Int("hold", 0, "calls left in flight before the batch")
	holdHeader := fs.String("hold-header", "x-hold=1", "k=v metadata of the held calls")
	stay := fs.Bool("stay", false, "start the channel's xDS resolution, make no call, exit when stdin closes")
	_ = fs.Parse(args)
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fail(err)
	}
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	if *stay {
		// The xDS-scale bench: the control plane times the ACKs, the bench reads the memory.
		conn.Connect()
		fmt.Println("STARTED")
		_, _ = io.Copy(io.Discard, os.Stdin)
		return
	}
	// Ready first (config resolved, connected), within a bound.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			break
		}
	}
	cancel()
	md := metadata.MD{}
	for _, h := range hs {
		k, v, _ := strings.Cut(h, "=")
		md.Append(k, v)
	}
	if *hold > 0 {
		k, v, _ := strings.Cut(*holdHeader, "=")
		held := metadata.NewOutgoingContext(context.Background(), metadata.Pairs(k, v))
		for i := 0; i < *hold; i++ {
			go func() {
				in, out := oneString(*name), []byte(nil)
				_ = conn.Invoke(held, "/helloworld.Greeter/SayHello", &in, &out, grpc.ForceCodec(raw.Codec{}))
			}()
		}
		fmt.Println("HOLDING")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fail(err)
		}
	}
	if *each == "" {
		fmt.Printf("RESULT %s\n", batch(conn, md, *n, *name))
		return
	}
	// One connection, one batch per value: the xDS setup is paid once.
	k, values, _ := strings.Cut(*each, "=")
	for _, v := range strings.Split(values, ",") {
		m := md.Copy()
		m.Set(k, v)
		fmt.Printf("EACH %s %s\n", v, batch(conn, m, *n, *name))
	}
}

// batch makes n calls with metadata md; the JSON of their replies and codes.
func batch(conn *grpc.ClientConn, md metadata.MD, n int, name string) []byte {
	replies, codesSeen := map[string]int{}, map[string]int{}
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 10*time.Second)
		in, out := oneString(name), []byte(nil)
		err := conn.Invoke(ctx, "/helloworld.Greeter/SayHello", &in, &out, grpc.ForceCodec(raw.Codec{}))
		cancel()
		if err != nil {
			codesSeen[status.Code(err).String()]++
			continue
		}
		codesSeen[codes.OK.String()]++
		replies[stringField(out)]++
	}
	line, _ := json.Marshal(map[string]any{"replies": replies, "codes": codesSeen})
	return line
}

func server(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "", "ip:port")
	_ = fs.Parse(args)
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fail(err)
	}
	modes := xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
		if a.Mode == connectivity.ServingModeServing {
			fmt.Println("SERVING")
		} else {
			fmt.Printf("NOT_SERVING %v\n", a.Err)
		}
	})
	srv, err := xds.NewGRPCServer(grpc.Creds(creds), modes, grpc.ForceServerCodec(raw.Codec{}))
	if err != nil {
		fail(err)
	}
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "helloworld.Greeter",
		HandlerType: (*any)(nil),
		// SayHelloAgain answers as SayHello does: a second registered method for the
		// authorization matrix (grpc-go answers unregistered methods before its RBAC runs).
		Methods: []grpc.MethodDesc{
			{MethodName: "SayHello", Handler: hello(*listen, "SayHello")},
			{MethodName: "SayHelloAgain", Handler: hello(*listen, "SayHelloAgain")},
		},
	}, struct{}{})
	// The side-by-side harness's method: the request's bytes back (grpc-go's contender in the
	// mTLS bench, xDS credentials at both ends).
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "bench.Echo",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: echo}},
	}, struct{}{})
	// An IPv4 address listens IPv4 only: Go would make 0.0.0.0 a dual-stack [::] socket,
	// which names another listener resource (the name is built from the listening address).
	network := "tcp"
	if host, _, err := net.SplitHostPort(*listen); err == nil && net.ParseIP(host).To4() != nil {
		network = "tcp4"
	}
	lis, err := net.Listen(network, *listen)
	if err != nil {
		fail(err)
	}
	if err := srv.Serve(lis); err != nil {
		fail(err)
	}
}

// hello answers with "<listen> /helloworld.Greeter/<method> <peer id>\n".
func hello(listen, method string) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		who := "-"
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				who = peerID(ti.State)
			}
		}
		out := oneString(fmt.Sprintf("%s /helloworld.Greeter/%s %s\n", listen, method, who))
		return &out, nil
	}
}

func echo(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

// csds asks a CSDS server (FetchClientStatus) for its client's status and prints the answer
// as protobuf JSON on one line: CSDS {...}.
func csds(args []string) {
	fs := flag.NewFlagSet("csds", flag.ExitOnError)
	addr := fs.String("server", "", "ip:port of the CSDS service")
	_ = fs.Parse(args)
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := csdspb.NewClientStatusDiscoveryServiceClient(conn).FetchClientStatus(ctx, &csdspb.ClientStatusRequest{})
	if err != nil {
		fail(err)
	}
	out, err := protojson.Marshal(res)
	if err != nil {
		fail(err)
	}
	fmt.Printf("CSDS %s\n", out)
}

func peerID(s tls.ConnectionState) string {
	if len(s.PeerCertificates) == 0 {
		return "-"
	}
	if u := s.PeerCertificates[0].URIs; len(u) > 0 {
		return u[0].String()
	}
	return "-"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "grpcpeer:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpcpeer client|server|csds|orca ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "client":
		client(os.Args[2:])
	case "server":
		server(os.Args[2:])
	case "csds":
		csds(os.Args[2:])
	case "orca":
		orcaServer(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: grpcpeer client|server|csds|orca ...")
		os.Exit(2)
	}
}
