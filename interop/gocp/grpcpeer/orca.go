package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/orca"

	"mesh.local/gocp/internal/raw"
)

// orcaMethod is the out-of-band load report stream's method.
const orcaMethod = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"

// orcaServer is a plain grpc-go server (no xDS) serving Greeter as `server` does, plus
// grpc-go's ORCA service (orca.Register) reporting -cpu and -qps from a
// ServerMetricsRecorder: what a backend of a client_side_weighted_round_robin cluster with
// enable_oob_load_report runs. It prints SERVING, then ORCA_OPEN / ORCA_CLOSE as report
// streams start and end; a stdin line "cpu F" changes the reported utilization (answered
// with "SET F").
func orcaServer(args []string) {
	fs := flag.NewFlagSet("orca", flag.ExitOnError)
	listen := fs.String("listen", "", "ip:port")
	cpu := fs.Float64("cpu", 0, "cpu_utilization to report")
	qps := fs.Float64("qps", 100, "rps_fractional to report")
	_ = fs.Parse(args)
	smr := orca.NewServerMetricsRecorder()
	smr.SetCPUUtilization(*cpu)
	smr.SetQPS(*qps)
	opts := orca.ServiceOptions{ServerMetricsProvider: smr, MinReportingInterval: 50 * time.Millisecond}
	allowShortReportingIntervals(&opts)
	streams := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod != orcaMethod {
			return handler(srv, ss)
		}
		fmt.Println("ORCA_OPEN")
		err := handler(srv, ss)
		fmt.Println("ORCA_CLOSE")
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(raw.Codec{}), grpc.StreamInterceptor(streams))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "helloworld.Greeter",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "SayHello", Handler: hello(*listen, "SayHello")}},
	}, struct{}{})
	if err := orca.Register(srv, opts); err != nil {
		fail(err)
	}
	lis, err := net.Listen("tcp4", *listen)
	if err != nil {
		fail(err)
	}
	fmt.Println("SERVING")
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			f := strings.Fields(in.Text())
			if len(f) != 2 || f[0] != "cpu" {
				continue
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				fail(err)
			}
			smr.SetCPUUtilization(v)
			fmt.Println("SET", f[1])
		}
	}()
	if err := srv.Serve(lis); err != nil {
		fail(err)
	}
}

// allowShortReportingIntervals lifts grpc-go's 30 s floor on reporting intervals, which its
// own tests lift through an option only grpc-go's packages can reach: the test asks for a
// report every 200 ms, to see a change of load within a second.
func allowShortReportingIntervals(o *orca.ServiceOptions) {
	f := reflect.ValueOf(o).Elem().FieldByName("allowAnyMinReportingInterval")
	if !f.IsValid() {
		fail(fmt.Errorf("grpc-go's orca.ServiceOptions has no allowAnyMinReportingInterval"))
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().SetBool(true)
}
