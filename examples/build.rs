//! Generates the tonic greeter client and server from a service description in Rust
//! (tonic-build's `manual` mode: the same generator as for .proto files, without protoc).

fn main() {
    let method = tonic_build::manual::Method::builder()
        .name("say_hello")
        .route_name("SayHello")
        .input_type("crate::greeter::HelloRequest")
        .output_type("crate::greeter::HelloReply")
        .codec_path("tonic_prost::ProstCodec")
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Greeter")
        .package("helloworld")
        .method(method)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
