/// The handler's response, or the RBAC refusal (shared with the other inbound checks).
pub type ResponseFuture<F> = crate::refusal::RefusalFuture<F>;
