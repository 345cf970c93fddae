// The load reporting side of gocp: an LRS server (envoy.service.load_stats.v3) on the ADS
// port that asks every client for all its clusters every 200 ms and keeps what they report,
// served as JSON on GET /lrs (one entry per locality per report).
package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// lrsEntry is one locality of one cluster in one report.
type lrsEntry struct {
	Node       string `json:"node"`
	Cluster    string `json:"cluster"`
	Service    string `json:"service"`
	Zone       string `json:"zone"`
	Successful uint64 `json:"successful"`
	InProgress uint64 `json:"in_progress"`
	Errors     uint64 `json:"errors"`
	Issued     uint64 `json:"issued"`
	Dropped    uint64 `json:"dropped"`
	// Metrics are the locality's load_metric_stats (named ORCA metrics, gRFC A64).
	Metrics []lrsMetric `json:"metrics"`
}

// lrsMetric is one load_metric_stats entry.
type lrsMetric struct {
	Name     string  `json:"name"`
	Requests uint64  `json:"requests"`
	Total    float64 `json:"total"`
}

type lrsServer struct {
	lrsv3.UnimplementedLoadReportingServiceServer
	mu      sync.Mutex
	entries []lrsEntry
}

func (s *lrsServer) StreamLoadStats(stream lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	node := first.GetNode().GetId()
	if err := stream.Send(&lrsv3.LoadStatsResponse{
		SendAllClusters:       true,
		LoadReportingInterval: durationpb.New(200 * time.Millisecond),
	}); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		s.mu.Lock()
		for _, c := range req.ClusterStats {
			for _, l := range c.UpstreamLocalityStats {
				metrics := []lrsMetric{}
				for _, m := range l.LoadMetricStats {
					metrics = append(metrics, lrsMetric{Name: m.MetricName, Requests: m.NumRequestsFinishedWithMetric, Total: m.TotalMetricValue})
				}
				s.entries = append(s.entries, lrsEntry{
					Node: node, Cluster: c.ClusterName, Service: c.ClusterServiceName,
					Zone: l.GetLocality().GetZone(), Successful: l.TotalSuccessfulRequests,
					InProgress: l.TotalRequestsInProgress, Errors: l.TotalErrorRequests,
					Issued: l.TotalIssuedRequests, Dropped: c.TotalDroppedRequests,
					Metrics: metrics,
				})
			}
		}
		s.mu.Unlock()
	}
}

func (s *lrsServer) serveHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("content-type", "application/json")
	_ = json.NewEncoder(w).Encode(s.entries)
}
