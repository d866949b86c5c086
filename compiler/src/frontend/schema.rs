//! JSON Schema (schemars) for every accepted kind.
//!
//! In: a kind name (`CiliumNetworkPolicy`, case-insensitive). Out: the JSON Schema of its typed model, or
//! `None` for a kind ciliumc does not accept.
use schemars::{JsonSchema, schema_for};

use super::model::{self, Kind};

/// The JSON Schema of `kind`.
pub fn schema(kind: &str) -> Option<serde_json::Value> {
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(kind))?;
    Some(match kind {
        Kind::NetworkPolicy => of::<model::NetworkPolicy>(),
        Kind::CiliumNetworkPolicy | Kind::CiliumClusterwideNetworkPolicy => {
            of::<model::CiliumNetworkPolicy>()
        }
        Kind::CiliumLocalRedirectPolicy => of::<model::CiliumLocalRedirectPolicy>(),
        Kind::Service => of::<model::Service>(),
        Kind::EndpointSlice => of::<model::EndpointSlice>(),
        Kind::Namespace => of::<model::Namespace>(),
        Kind::Pod => of::<model::Pod>(),
        Kind::Node => of::<model::Node>(),
        Kind::CiliumExternalWorkload => of::<model::CiliumExternalWorkload>(),
        Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet | Kind::Job => {
            of::<model::Workload>()
        }
        Kind::CronJob => of::<model::CronJob>(),
    })
    .map(|mut v| {
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "title".to_string(),
                serde_json::Value::String(kind.as_str().to_string()),
            );
        }
        v
    })
}

fn of<T: JsonSchema>() -> serde_json::Value {
    schema_for!(T).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_and_unknown_kinds_none() {
        for k in Kind::ALL {
            let s = schema(k.as_str()).unwrap();
            assert_eq!(s["title"], k.as_str());
            assert!(s["properties"]["metadata"].is_object(), "{k}");
        }
        assert!(schema("Frobnicator").is_none());
    }

    #[test]
    fn cnp_schema_covers_rule_fields() {
        let s = schema("ciliumnetworkpolicy").unwrap().to_string();
        for field in [
            "endpointSelector",
            "ingressDeny",
            "fromCIDRSet",
            "toFQDNs",
            "icmps",
            "enableDefaultDeny",
            "serverNames",
        ] {
            assert!(s.contains(field), "{field}");
        }
    }
}
