// Command grpcload is the grpc-go contender of the side-by-side harness: a closed-loop load
// generator that reaches the echo server through gRPC's own proxyless xDS client.
//
// It reads the gRPC bootstrap from GRPC_XDS_BOOTSTRAP (written by the harness, pointing at
// the go-control-plane fixture), dials xds:///<target> (with -xds-creds, TLS as the control
// plane's cluster says: mTLS from the bootstrap's certificate providers), and calls one unary method with raw
// bytes (no protobuf on either side, so only the transport and xDS stack are measured). It
// prints one line the harness parses:
//
//	RESULT requests=N errors=N secs=S p50=µs p90=µs p99=µs max=µs cpu_us=N rss_kb=N
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers

	"mesh.local/gocp/internal/raw"
)

func cpuMicros() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000
}

func rssKB() int64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func main() {
	target := flag.String("target", "xds:///web", "gRPC target")
	method := flag.String("method", "/bench.Echo/Unary", "full method name")
	concurrency := flag.Int("concurrency", 1, "requests in flight")
	secs := flag.Float64("secs", 1, "seconds of load")
	size := flag.Int("size", 64, "message bytes")
	useXds := flag.Bool("xds-creds", false, "xDS credentials: TLS as the control plane says (mTLS from the bootstrap's certificate providers)")
	flag.Parse()

	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if *useXds {
		c, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			fmt.Fprintln(os.Stderr, "xds credentials:", err)
			os.Exit(1)
		}
		creds = c
	}
	conn, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	body := make([]byte, *size)
	for i := range body {
		body[i] = 'x'
	}
	call := func(ctx context.Context) error {
		var out []byte
		in := body
		if err := conn.Invoke(ctx, *method, &in, &out, grpc.ForceCodec(raw.Codec{}), grpc.WaitForReady(true)); err != nil {
			return err
		}
		if len(out) != len(body) {
			return fmt.Errorf("echoed %d bytes, sent %d", len(out), len(body))
		}
		return nil
	}
	// Warm up: xDS resolved, connection open.
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := call(ctx)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "warm-up:", err)
			os.Exit(1)
		}
	}

	cpu0 := cpuMicros()
	start := time.Now()
	deadline := start.Add(time.Duration(*secs * float64(time.Second)))
	var mu sync.Mutex
	var all []int64
	errors := 0
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []int64
			errs := 0
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := call(context.Background()); err != nil {
					errs++
					continue
				}
				lat = append(lat, time.Since(t).Microseconds())
			}
			mu.Lock()
			all = append(all, lat...)
			errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu := cpuMicros() - cpu0
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		i := int(float64(len(all)) * p)
		if i >= len(all) {
			i = len(all) - 1
		}
		return all[i]
	}
	var max int64
	if len(all) > 0 {
		max = all[len(all)-1]
	}
	fmt.Printf("RESULT requests=%d errors=%d secs=%.3f p50=%d p90=%d p99=%d max=%d cpu_us=%d rss_kb=%d\n",
		len(all), errors, elapsed, q(0.5), q(0.9), q(0.99), max, cpu, rssKB())
}
