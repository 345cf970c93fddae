// gocp: a test control plane built on go-control-plane, for the mesh's interop tests.
//
// It serves ADS (State of the World and Delta) from go-control-plane's snapshot cache and is
// driven over a small local HTTP API:
//
//	POST /snapshot/<node id>   body: {"version": "v1", "resources": ["<base64 google.protobuf.Any>", ...]}
//	GET  /events               every discovery request seen, in order, with NACK details
//	GET  /lrs                  every load report received (see lrs.go)
//	GET  /acked?node=…         waits until a node has ACKed a whole snapshot (see acks.go)
//
// On start it prints one line, "READY ads=<port> http=<port>", and serves until killed.
// Everything binds 127.0.0.1.
//
// GOCP_RECORD=0 keeps no events (/events stays empty): a client that subscribes to N names one
// at a time sends N requests naming up to N resources each, too much to keep for large N.
//
// GOCP_ADS_CONSISTENT=1 turns on the snapshot cache's ADS consistency mode. In that mode a
// SotW response is withheld unless the request names every resource of its type in the
// snapshot: right for Envoy's wildcard CDS, but a client that subscribes by name (gRPC, ours)
// then only gets answers when the snapshot holds exactly what its routes reference.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Register every message type a snapshot may carry, so Any payloads can be decoded.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// event is one discovery request as the server saw it.
type event struct {
	Node    string   `json:"node"`
	Delta   bool     `json:"delta"`
	TypeURL string   `json:"type_url"`
	Version string   `json:"version"`
	Nonce   string   `json:"nonce"`
	Names   []string `json:"names"`
	Nack    *string  `json:"nack"`
	AtUs    int64    `json:"at_us"`
}

type recorder struct {
	off    bool
	mu     sync.Mutex
	nodes  map[int64]string
	events []event
}

func (r *recorder) add(e event) {
	if r.off {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) node(stream int64, id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != "" {
		r.nodes[stream] = id
	}
	return r.nodes[stream]
}

type snapshotBody struct {
	Version   string   `json:"version"`
	Resources []string `json:"resources"`
}

func main() {
	ctx := context.Background()
	logger := log.New(os.Stderr, "gocp ", log.LstdFlags)
	cache := cachev3.NewSnapshotCache(os.Getenv("GOCP_ADS_CONSISTENT") == "1", cachev3.IDHash{}, nil)
	rec := &recorder{nodes: map[int64]string{}, off: os.Getenv("GOCP_RECORD") == "0"}
	acked := newAcks()

	callbacks := serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discoverygrpc.DiscoveryRequest) error {
			e := event{Node: rec.node(id, req.GetNode().GetId()), TypeURL: req.TypeUrl, Version: req.VersionInfo,
				Nonce: req.ResponseNonce, Names: req.ResourceNames, AtUs: time.Now().UnixMicro()}
			if req.ErrorDetail != nil {
				msg := req.ErrorDetail.Message
				e.Nack = &msg
			}
			rec.add(e)
			acked.onRequest(id, e.Node, req)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
			acked.response(streamKey{false, id}, resp.TypeUrl, resp.Nonce, len(resp.Resources))
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoverygrpc.DeltaDiscoveryRequest, resp *discoverygrpc.DeltaDiscoveryResponse) {
			acked.response(streamKey{true, id}, resp.TypeUrl, resp.Nonce, len(resp.Resources))
		},
		StreamDeltaRequestFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			e := event{Node: rec.node(id, req.GetNode().GetId()), Delta: true, TypeURL: req.TypeUrl,
				Nonce: req.ResponseNonce, Names: req.ResourceNamesSubscribe, AtUs: time.Now().UnixMicro()}
			if req.ErrorDetail != nil {
				msg := req.ErrorDetail.Message
				e.Nack = &msg
			}
			rec.add(e)
			acked.onDeltaRequest(id, e.Node, req)
			return nil
		},
	}
	srv := serverv3.NewServer(ctx, cache, callbacks)
	grpcServer := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(grpcServer, srv)
	lrs := &lrsServer{}
	lrsv3.RegisterLoadReportingServiceServer(grpcServer, lrs)

	adsLis, err := net.Listen("tcp", "127.0.0.1:"+envOr("GOCP_ADS_PORT", "0"))
	if err != nil {
		logger.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		logger.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/snapshot/", func(w http.ResponseWriter, r *http.Request) {
		node := strings.TrimPrefix(r.URL.Path, "/snapshot/")
		var body snapshotBody
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		byType := map[string][]types.Resource{}
		for i, b64 := range body.Resources {
			raw, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				http.Error(w, fmt.Sprintf("resources[%d]: %v", i, err), http.StatusBadRequest)
				return
			}
			wrapped := &anypb.Any{}
			if err := proto.Unmarshal(raw, wrapped); err != nil {
				http.Error(w, fmt.Sprintf("resources[%d]: %v", i, err), http.StatusBadRequest)
				return
			}
			msg, err := wrapped.UnmarshalNew()
			if err != nil {
				http.Error(w, fmt.Sprintf("resources[%d]: %v", i, err), http.StatusBadRequest)
				return
			}
			byType[wrapped.TypeUrl] = append(byType[wrapped.TypeUrl], msg.(types.Resource))
		}
		snap, err := cachev3.NewSnapshot(body.Version, byType)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// The Delta version map (a hash of every resource) is built now rather than by the
		// first Delta watch: at 10k clusters that is ~150 ms of this server's work, which the
		// xDS-scale bench would otherwise count as the first Delta client's.
		if err := snap.ConstructVersionMap(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := cache.SetSnapshot(ctx, node, snap); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(rec.events)
	})

	mux.HandleFunc("/lrs", lrs.serveHTTP)
	mux.HandleFunc("/acked", acked.serveHTTP)
	go func() { logger.Fatal(http.Serve(httpLis, mux)) }()
	fmt.Printf("READY ads=%d http=%d\n", adsLis.Addr().(*net.TCPAddr).Port, httpLis.Addr().(*net.TCPAddr).Port)
	if err := grpcServer.Serve(adsLis); err != nil {
		logger.Fatal(err)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
