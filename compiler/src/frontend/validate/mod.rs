//! Semantic validation of typed objects, with spans.
//!
//! In: a [`LoadedObject`]. Out: diagnostics (errors make the loader drop the object). Split by concern:
//! `net` (CIDRs, IPs), `ports` (ports, protocols), `cilium` (CNP/CCNP rules), `k8s` (NetworkPolicy),
//! `other` (LRP, selectors, inventory), `enforced` (what ciliumc parses but does not enforce yet).
mod cilium;
mod enforced;
mod k8s;
mod l7;
mod net;
mod other;
mod ports;
mod report;

use super::diagnostic::Diagnostic;
use super::load::{LoadOptions, LoadedObject};
use super::model::Object;

pub use net::{Cidr, parse_cidr};
pub use ports::is_iana_svc_name;

/// All semantic diagnostics for one object.
pub fn validate_object(obj: &LoadedObject, options: &LoadOptions) -> Vec<Diagnostic> {
    let mut r = report::Reporter::new(obj, options);
    match &obj.object {
        Object::CiliumNetworkPolicy(p) | Object::CiliumClusterwideNetworkPolicy(p) => {
            cilium::check_policy(&mut r, p)
        }
        Object::NetworkPolicy(p) => k8s::check_network_policy(&mut r, p),
        Object::CiliumLocalRedirectPolicy(p) => {
            other::check_lrp(&mut r, p);
            enforced::whole_kind(&mut r, "CiliumLocalRedirectPolicy");
        }
        Object::Service(s) => other::check_service(&mut r, s),
        Object::Pod(p) => other::check_pod(&mut r, p),
        Object::Workload(w) => other::check_workload(&mut r, w),
        Object::CronJob(c) => other::check_cronjob(&mut r, c),
        Object::EndpointSlice(_)
        | Object::Namespace(_)
        | Object::Node(_)
        | Object::CiliumExternalWorkload(_) => {}
    }
    r.finish()
}
