// Package raw is a gRPC codec that passes messages through as the bytes they are, so the Go
// peers need no generated code.
package raw

// Codec marshals *[]byte as itself. Its name is "proto", so it also serves servers whose
// callers send ordinary protobuf content types.
type Codec struct{}

// Marshal returns the bytes v points at.
func (Codec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }

// Unmarshal copies data into the slice v points at.
func (Codec) Unmarshal(data []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], data...)
	return nil
}

// Name is the content subtype.
func (Codec) Name() string { return "proto" }
