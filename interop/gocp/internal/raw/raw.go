// Package raw is a gRPC codec that passes messages through as the bytes they are, so the Go
// peers need no generated code.
package raw

import "google.golang.org/protobuf/proto"

// Codec marshals *[]byte as itself, and generated messages (services registered from
// grpc-go's own packages, such as ORCA's) as protobuf. Its name is "proto", so it also serves
// servers whose callers send ordinary protobuf content types.
type Codec struct{}

// Marshal returns the bytes v points at, or the encoded message.
func (Codec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(proto.Message); ok {
		return proto.Marshal(m)
	}
	return *(v.(*[]byte)), nil
}

// Unmarshal copies data into the slice v points at, or decodes it into the message.
func (Codec) Unmarshal(data []byte, v any) error {
	if m, ok := v.(proto.Message); ok {
		return proto.Unmarshal(data, m)
	}
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}

// Name is the content subtype.
func (Codec) Name() string { return "proto" }
