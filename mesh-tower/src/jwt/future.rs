/// The handler's response, or the JWT refusal (shared with the other inbound checks).
pub type ResponseFuture<F> = crate::refusal::RefusalFuture<F>;
