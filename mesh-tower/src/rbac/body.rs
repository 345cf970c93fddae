/// The handler's body, or the RBAC refusal's (shared with the other inbound checks).
pub type RbacBody<B> = crate::refusal::RefusalBody<B>;
