package main

// acks.go: when has a node ACKed a whole snapshot? For the xDS-scale bench, which times
// Envoy, grpc-go's xDS client and ours on one snapshot and needs one definition of "ready"
// that does not depend on what each client reports about itself: the ACK the control plane
// receives for the response that completed the client's view of each resource type.
//
//	GET /acked?node=<id>&lds=<n>&rds=<n>&cds=<n>&eds=<n>&timeout_ms=<ms>
//
// waits until the node has ACKed, for every type given, a response after which it held at
// least <n> resources of that type (SotW: the response's own count; Delta: the resources
// sent on the stream so far), and answers {"ready": true, "at_us": <unix µs of the last of
// those ACKs>}; {"ready": false} when the timeout passes first. It blocks on the ACKs as
// they arrive (no polling): a 50k-cluster run must not have the bench's own requests compete
// with the clients for the two cores.

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

type streamKey struct {
	delta bool
	id    int64
}

type typeKey struct{ node, typeURL string }

type streamAcks struct {
	node  string
	sent  map[string]int // response nonce → resources the client holds once it takes it
	total map[string]int // Delta: resources sent so far, per type
}

type ackAt struct {
	held int
	at   int64
}

type acks struct {
	mu      sync.Mutex
	wake    chan struct{}
	streams map[streamKey]*streamAcks
	acked   map[typeKey][]ackAt
}

func newAcks() *acks {
	return &acks{wake: make(chan struct{}), streams: map[streamKey]*streamAcks{}, acked: map[typeKey][]ackAt{}}
}

func (a *acks) stream(k streamKey, node string) *streamAcks {
	s := a.streams[k]
	if s == nil {
		s = &streamAcks{sent: map[string]int{}, total: map[string]int{}}
		a.streams[k] = s
	}
	if node != "" {
		s.node = node
	}
	return s
}

// response records what a response brings the client to.
func (a *acks) response(k streamKey, typeURL, nonce string, count int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stream(k, "")
	if k.delta {
		s.total[typeURL] += count
		count = s.total[typeURL]
	}
	s.sent[nonce] = count
}

// request records an ACK (a request naming a response's nonce, without an error).
func (a *acks) request(k streamKey, node, typeURL, nonce string, nack bool) {
	now := time.Now().UnixMicro()
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stream(k, node)
	held, ok := s.sent[nonce]
	if nonce == "" || nack || !ok {
		return
	}
	key := typeKey{s.node, typeURL}
	a.acked[key] = append(a.acked[key], ackAt{held, now})
	close(a.wake)
	a.wake = make(chan struct{})
}

var shortTypes = map[string]string{
	"lds": resourcev3.ListenerType,
	"rds": resourcev3.RouteType,
	"cds": resourcev3.ClusterType,
	"eds": resourcev3.EndpointType,
}

// ready reports whether every wanted type is ACKed in full, and when the last one was.
func (a *acks) ready(node string, want map[string]int) (bool, int64) {
	var last int64
	for typeURL, n := range want {
		found := false
		for _, ack := range a.acked[typeKey{node, typeURL}] {
			if ack.held >= n {
				found = true
				last = max(last, ack.at)
				break
			}
		}
		if !found {
			return false, 0
		}
	}
	return true, last
}

func (a *acks) serveHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	node := q.Get("node")
	want := map[string]int{}
	for short, typeURL := range shortTypes {
		if v := q.Get(short); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				http.Error(w, short+": "+err.Error(), http.StatusBadRequest)
				return
			}
			want[typeURL] = n
		}
	}
	timeoutMs, _ := strconv.Atoi(q.Get("timeout_ms"))
	deadline := time.After(time.Duration(timeoutMs) * time.Millisecond)
	w.Header().Set("content-type", "application/json")
	for {
		a.mu.Lock()
		ok, at := a.ready(node, want)
		wake := a.wake
		a.mu.Unlock()
		if ok {
			_ = json.NewEncoder(w).Encode(map[string]any{"ready": true, "at_us": at})
			return
		}
		select {
		case <-wake:
		case <-deadline:
			_ = json.NewEncoder(w).Encode(map[string]any{"ready": false})
			return
		}
	}
}

// callbacks wires the tracker into the server's callbacks.
func (a *acks) onRequest(id int64, node string, req *discoverygrpc.DiscoveryRequest) {
	a.request(streamKey{false, id}, node, req.TypeUrl, req.ResponseNonce, req.ErrorDetail != nil)
}

func (a *acks) onDeltaRequest(id int64, node string, req *discoverygrpc.DeltaDiscoveryRequest) {
	a.request(streamKey{true, id}, node, req.TypeUrl, req.ResponseNonce, req.ErrorDetail != nil)
}
