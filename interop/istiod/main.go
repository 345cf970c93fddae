// istiod runs Istio's discovery server (the real xDS generators of istio.io/istio's pilot,
// including the gRPC generator used for proxyless clients) without Kubernetes, for the mesh's
// interop tests.
//
// It uses the harness Istio's own grpcgen tests use (pilot/test/xds.FakeDiscoveryServer: a fake
// kube client, an in-memory config store) but serves it on a real TCP listener, serves istiod's
// debug endpoints (/debug/syncz, /debug/config_dump, ...) on a second one, and takes its Istio
// config from a directory of YAML files that it watches: a file edited, added or removed is
// applied to the store, which pushes to connected clients as istiod does on a CRD change.
//
// Usage: istiod -config DIR [-grpc 127.0.0.1:0] [-http 127.0.0.1:0]
// Prints "READY grpc=<addr> http=<addr>" once serving, and "APPLIED <n>" after each reload.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/log"
)

// failer satisfies the harness's test.Failer outside of `go test`: failures end the process.
type failer struct {
	mu       sync.Mutex
	cleanups []func()
}

func (f *failer) Fail()    { fmt.Fprintln(os.Stderr, "istiod: failure"); os.Exit(1) }
func (f *failer) FailNow() { f.Fail() }
func (f *failer) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"istiod: fatal:"}, args...)...)
	os.Exit(1)
}
func (f *failer) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }
func (f *failer) Log(args ...any)                   { fmt.Fprintln(os.Stderr, args...) }
func (f *failer) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (f *failer) TempDir() string {
	d, err := os.MkdirTemp("", "istiod")
	if err != nil {
		f.Fatal(err)
	}
	return d
}
func (f *failer) Helper()          {}
func (f *failer) Skip(args ...any) { f.Fatal(append([]any{"skip:"}, args...)...) }
func (f *failer) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// readDir concatenates every *.yaml file under dir (sorted, recursive) as one multi-document
// string, and returns a digest to notice changes.
func readDir(dir string) (string, [32]byte, error) {
	var files []string
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", [32]byte{}, err
	}
	sort.Strings(files)
	var b strings.Builder
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			return "", [32]byte{}, err
		}
		b.WriteString("\n---\n")
		b.Write(data)
		b.WriteString("\n")
	}
	s := b.String()
	return s, sha256.Sum256([]byte(s)), nil
}

type key struct {
	gvk             config.GroupVersionKind
	name, namespace string
}

// apply reconciles the store with the parsed documents: creates, updates and deletes.
func apply(store model.ConfigStoreController, want []config.Config, have map[key]bool) (map[key]bool, error) {
	next := map[key]bool{}
	for _, c := range want {
		k := key{c.GroupVersionKind, c.Name, c.Namespace}
		next[k] = true
		if store.Get(c.GroupVersionKind, c.Name, c.Namespace) != nil {
			if _, err := store.Update(c); err != nil {
				return have, fmt.Errorf("update %s/%s: %w", c.Namespace, c.Name, err)
			}
		} else if _, err := store.Create(c); err != nil {
			return have, fmt.Errorf("create %s/%s: %w", c.Namespace, c.Name, err)
		}
	}
	for k := range have {
		if !next[k] {
			if err := store.Delete(k.gvk, k.name, k.namespace, nil); err != nil {
				return have, fmt.Errorf("delete %s/%s: %w", k.namespace, k.name, err)
			}
		}
	}
	return next, nil
}

func main() {
	dir := flag.String("config", "", "directory of Istio YAML files (watched)")
	grpcAddr := flag.String("grpc", "127.0.0.1:0", "plaintext ADS listen address")
	httpAddr := flag.String("http", "127.0.0.1:0", "debug HTTP listen address")
	poll := flag.Duration("poll", 20*time.Millisecond, "how often the config directory is checked")
	flag.Parse()
	// istiod's own log goes to stderr; stdout carries only READY and APPLIED lines.
	logOpts := log.DefaultOptions()
	logOpts.OutputPaths = []string{"stderr"}
	if err := log.Configure(logOpts); err != nil {
		fmt.Fprintln(os.Stderr, "istiod: log:", err)
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: istiod -config DIR [-grpc ADDR] [-http ADDR]")
		os.Exit(2)
	}
	text, digest, err := readDir(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "istiod:", err)
		os.Exit(1)
	}
	initial, _, err := crd.ParseInputs(text)
	if err != nil {
		fmt.Fprintln(os.Stderr, "istiod: config:", err)
		os.Exit(1)
	}
	have := map[key]bool{}
	for _, c := range initial {
		have[key{c.GroupVersionKind, c.Name, c.Namespace}] = true
	}

	lis, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "istiod:", err)
		os.Exit(1)
	}
	f := &failer{}
	s := xds.NewFakeDiscoveryServer(f, xds.FakeOptions{
		Configs:         initial,
		ListenerBuilder: func() (net.Listener, error) { return lis, nil },
		DebounceTime:    10 * time.Millisecond,
	})

	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "istiod:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/", s.DiscoveryDebug)
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })
	go func() { _ = http.Serve(hl, mux) }()
	fmt.Printf("READY grpc=%s http=%s\n", lis.Addr(), hl.Addr())

	generation := 0
	for {
		time.Sleep(*poll)
		text, d, err := readDir(*dir)
		if err != nil || d == digest {
			continue
		}
		digest = d
		cfgs, _, err := crd.ParseInputs(text)
		if err != nil {
			// Like istiod's file watcher: a bad file is reported and the last good config stays.
			fmt.Fprintln(os.Stderr, "istiod: config rejected:", err)
			continue
		}
		if have, err = apply(s.Store(), cfgs, have); err != nil {
			fmt.Fprintln(os.Stderr, "istiod:", err)
			continue
		}
		generation++
		fmt.Printf("APPLIED %d\n", generation)
	}
}
