//go:build tools

// Package tools pins Jaeger v2 (an OpenTelemetry Collector distribution with Jaeger's
// in-memory storage and query API) as the tracing tests' OTLP receiver. The test command
// builds github.com/jaegertracing/jaeger/cmd/jaeger from this module's go.sum.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
