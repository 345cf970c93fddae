//! Responses: what a SotW or Delta response changes, and the ACK or NACK it is answered with.
//!
//! Why apart from the subscriptions: a response is where untrusted input arrives, and its
//! rules (per-resource NACKs that still apply the valid rest, SotW deletion, unchanged copies
//! skipped by content) are read together here.

use super::*;

impl Ads {
    /// Handles a SotW response.
    pub fn on_sotw(&mut self, mut resp: DiscoveryResponse, _now: Instant) -> Output {
        let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
            tracing::debug!(type_url = %resp.type_url, "ignoring response of an unknown type");
            return Output::default();
        };
        let mut out = Output::default();
        let mut errors = Vec::new();
        let mut decoded = Vec::with_capacity(resp.resources.len());
        // The names present, for SotW's deletion rule (listeners and clusters only).
        let track = matches!(ty, ResourceType::Listener | ResourceType::Cluster);
        let mut seen = BTreeSet::new();
        let arrived = SystemTime::now();
        // Taken, not copied: each accepted copy is kept as it came (CSDS).
        for (i, any) in std::mem::take(&mut resp.resources).into_iter().enumerate() {
            let h = content_hash(&any);
            if let Some(name) = self.unchanged(ty, h, &resp.version_info) {
                if track {
                    seen.insert(crate::federation::canonical(name).into_owned());
                }
                continue;
            }
            match translate::decode_in(ty, &any, &self.config.context) {
                Ok(d) => decoded.push((d, h, Arc::new(any))),
                Err(e) => errors.push(format!("resources[{i}]: {e}")),
            }
        }
        self.types[ty.index()].nonce = resp.nonce.clone();
        if !errors.is_empty() {
            // A top-level error: nothing from this response applies.
            return self.nack(ty, errors, out);
        }
        for (d, h, raw) in decoded {
            if track {
                seen.insert(crate::federation::canonical(&d.name).into_owned());
            }
            self.accept(
                ty,
                d.name,
                (d.result, h, raw),
                &resp.version_info,
                arrived,
                &mut errors,
                &mut out,
            );
        }
        // SotW: a listener or cluster we hold that is absent from the response was deleted.
        // One we never received is left to the timer: the response may answer an older
        // subscription that did not name it yet (gRPC does the same).
        if track {
            let st = &self.types[ty.index()];
            let absent: Vec<String> = st
                .wanted
                .iter()
                .filter(|n| !seen.contains(crate::federation::canonical(n).as_ref()))
                .filter(|n| st.resources.get(*n).is_some_and(|m| m.has_value))
                .cloned()
                .collect();
            for name in absent {
                self.missing(ty, &name, "not in the control plane's response", &mut out);
            }
        }
        if errors.is_empty() {
            self.ack(ty, Some(resp.version_info), out)
        } else {
            self.nack(ty, errors, out)
        }
    }

    /// Handles a Delta response.
    pub fn on_delta(&mut self, mut resp: DeltaDiscoveryResponse, _now: Instant) -> Output {
        let Some(ty) = ResourceType::from_type_url(&resp.type_url) else {
            tracing::debug!(type_url = %resp.type_url, "ignoring response of an unknown type");
            return Output::default();
        };
        let mut out = Output::default();
        let mut errors = Vec::new();
        let mut decoded = Vec::with_capacity(resp.resources.len());
        let arrived = SystemTime::now();
        for (i, r) in std::mem::take(&mut resp.resources).into_iter().enumerate() {
            let Some(any) = r.resource else {
                errors.push(format!("resources[{i}] ({:?}): no resource body", r.name));
                continue;
            };
            let h = content_hash(&any);
            if self.unchanged(ty, h, &r.version).is_some() {
                continue;
            }
            match translate::decode_in(ty, &any, &self.config.context) {
                Ok(d) if !r.name.is_empty() && d.name != r.name => errors.push(format!(
                    "resources[{i}]: named {:?} but contains {:?}",
                    r.name, d.name
                )),
                Ok(d) => decoded.push((d, h, Arc::new(any), r.version)),
                Err(e) => errors.push(format!("resources[{i}]: {e}")),
            }
        }
        self.types[ty.index()].nonce = resp.nonce.clone();
        if !errors.is_empty() {
            return self.nack(ty, errors, out);
        }
        for (d, h, raw, version) in decoded {
            self.accept(
                ty,
                d.name,
                (d.result, h, raw),
                &version,
                arrived,
                &mut errors,
                &mut out,
            );
        }
        for name in &resp.removed_resources {
            let wanted = &self.types[ty.index()].wanted;
            let name = match wanted.get(name) {
                Some(_) => Some(name.clone()),
                None if name.starts_with(crate::federation::XDSTP) => {
                    let c = crate::federation::canonical(name);
                    wanted
                        .iter()
                        .find(|w| crate::federation::canonical(w) == c)
                        .cloned()
                }
                None => None,
            };
            if let Some(name) = name {
                self.missing(ty, &name, "removed by the control plane", &mut out);
            }
        }
        if errors.is_empty() {
            self.ack(ty, None, out)
        } else {
            self.nack(ty, errors, out)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        ty: ResourceType,
        name: String,
        (result, content, raw): (Result<Translated, String>, u64, Arc<Any>),
        version: &str,
        arrived: SystemTime,
        errors: &mut Vec<String>,
        out: &mut Output,
    ) {
        let st = &mut self.types[ty.index()];
        let (name, result) = match st.wanted.contains(&name) {
            true => (name, result),
            // `xdstp:` context parameters may come back in another order: it is the name we
            // asked for (and the one the config refers to).
            false => match st.wanted.iter().find(|w| {
                name.starts_with(crate::federation::XDSTP)
                    && crate::federation::canonical(w) == crate::federation::canonical(&name)
            }) {
                Some(w) => (w.clone(), result.map(|t| t.renamed(w.clone()))),
                None => {
                    tracing::debug!(%name, kind = ty.short(), "ignoring a resource we did not subscribe to");
                    return;
                }
            },
        };
        let meta = st.resources.entry(name.clone()).or_default();
        match result {
            Ok(t) => {
                if let Some(old) = meta.content.replace(content)
                    && st.by_content.get(&old) == Some(&name)
                {
                    st.by_content.remove(&old);
                }
                st.by_content.insert(content, name.clone());
                meta.has_value = true;
                meta.missing = false;
                meta.requested_at = None;
                meta.status = ResourceStatus {
                    version: version.to_owned(),
                    last_updated: Some(arrived),
                    state: "acked",
                    last_error: None,
                    resource: Some(raw),
                };
                out.updates[ty.index()].0 += 1;
                out.changes.push(Change::Upsert(t));
            }
            Err(e) => {
                tracing::warn!(%name, kind = ty.short(), error = %e, "rejected resource; keeping the last good one");
                out.updates[ty.index()].1 += 1;
                if !meta.has_value {
                    meta.status.state = "nacked";
                }
                meta.status.last_error = Some(e.clone());
                errors.push(format!("{} {name:?}: {e}", ty.short()));
            }
        }
    }

    /// The name of the resource whose accepted copy has these bytes, if it is still held and
    /// its last copy was not rejected: then this copy changes nothing but its version.
    fn unchanged(&mut self, ty: ResourceType, content: u64, version: &str) -> Option<&str> {
        let st = &mut self.types[ty.index()];
        let name = st.by_content.get(&content)?;
        let meta = st.resources.get_mut(name)?;
        let same =
            meta.content == Some(content) && meta.has_value && meta.status.last_error.is_none();
        if !same || !st.wanted.contains(name) {
            return None;
        }
        if meta.status.version != version {
            meta.status.version = version.to_owned();
        }
        Some(name)
    }

    pub(super) fn missing(&mut self, ty: ResourceType, name: &str, why: &str, out: &mut Output) {
        let ignore = self.config.ignore_resource_deletion;
        let st = &mut self.types[ty.index()];
        let Some(meta) = st.resources.get_mut(name) else {
            return;
        };
        if meta.has_value && ignore {
            tracing::warn!(%name, kind = ty.short(), "control plane deleted the resource; keeping it (ignore_resource_deletion)");
            return;
        }
        if meta.missing {
            return;
        }
        if let Some(h) = meta.content.take() {
            st.by_content.remove(&h);
        }
        meta.has_value = false;
        meta.missing = true;
        meta.requested_at = None;
        meta.status.state = "does_not_exist";
        out.changes
            .push(Change::Missing(ty, name.to_owned(), why.to_owned()));
    }

    fn ack(&mut self, ty: ResourceType, version: Option<String>, mut out: Output) -> Output {
        let st = &mut self.types[ty.index()];
        st.nacks_in_a_row = 0;
        if let Some(v) = version {
            st.version = v;
        }
        let req = self.response_request(ty, None);
        out.requests.push(req);
        out
    }

    fn nack(&mut self, ty: ResourceType, errors: Vec<String>, mut out: Output) -> Output {
        let message = errors.join("; ");
        tracing::warn!(kind = ty.short(), error = %message, "NACK");
        let st = &mut self.types[ty.index()];
        st.nacks_in_a_row += 1;
        if st.nacks_in_a_row > 1 {
            let exp = NACK_BACKOFF_BASE.saturating_mul(1 << (st.nacks_in_a_row - 2).min(16));
            let capped = exp.min(NACK_BACKOFF_MAX);
            // Full jitter in [capped/2, capped].
            let jitter = capped.mul_f64(0.5 + fastrand::f64() / 2.0);
            out.delay = Some(jitter);
        }
        let status = RpcStatus {
            code: 3, // INVALID_ARGUMENT
            message,
            details: Vec::new(),
        };
        let req = self.response_request(ty, Some(status));
        out.requests.push(req);
        out
    }

    /// An ACK (no error) or NACK for the last response of `ty`.
    pub(super) fn response_request(
        &mut self,
        ty: ResourceType,
        error: Option<RpcStatus>,
    ) -> Request {
        let node = self.node();
        let st = &mut self.types[ty.index()];
        st.sent_any = true;
        match self.config.protocol {
            Protocol::Sotw => Request::Sotw(DiscoveryRequest {
                version_info: st.version.clone(),
                node,
                resource_names: st.wanted.iter().cloned().collect(),
                type_url: ty.type_url().into(),
                response_nonce: st.nonce.clone(),
                error_detail: error,
                ..Default::default()
            }),
            Protocol::Delta => Request::Delta(DeltaDiscoveryRequest {
                node,
                type_url: ty.type_url().into(),
                response_nonce: st.nonce.clone(),
                error_detail: error,
                ..Default::default()
            }),
        }
    }
}
