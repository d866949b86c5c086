//! `ciliumc compile`: resolved cluster → one ELF object per endpoint plus `manifest.json`.
//!
//! In: a [`ResolvedCluster`] and the digest of the inputs. Out: [`CompileOutput`] (bytes in memory,
//! deterministic) and [`write_output_dir`], which writes `DIR/manifest.json` and `DIR/bpf/*.o`
//! through a temporary directory renamed into place, so a reader never sees half an output.

use std::collections::BTreeSet;
use std::path::Path;

use ciliumc_ir::cidr::Cidr;
use ciliumc_ir::endpoint::Endpoint;
use ciliumc_ir::manifest::{
    Hook as ManifestHook, MANIFEST_FORMAT, Manifest, ManifestEndpoint, ManifestIdentity,
    ManifestProgram, ManifestRule,
};
use ciliumc_ir::policy::Direction;
use ciliumc_ir::policy::EndpointPolicy;
use ciliumc_targets::codegen::{self, CodegenOptions, FunctionStats};
use ciliumc_targets::elf::{ObjectWriter, Pinning};
use ciliumc_targets::hooks::Hook;

use crate::lower::{self, maps};
use crate::resolve::ResolvedCluster;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Lower(#[from] lower::LowerError),
    #[error("endpoint {endpoint}: {direction} program over the verifier budget: {source}")]
    Budget {
        endpoint: String,
        direction: Direction,
        source: lower::budget::BudgetError,
    },
    #[error("endpoint {endpoint}: code generation: {source}")]
    Codegen {
        endpoint: String,
        source: codegen::CodegenError,
    },
    #[error("endpoint {endpoint}: writing the ELF object: {source}")]
    Elf {
        endpoint: String,
        source: ciliumc_targets::elf::ElfError,
    },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("serializing the manifest: {0}")]
    Json(#[from] serde_json::Error),
}

/// One endpoint's object.
#[derive(Debug, Clone)]
pub struct CompiledObject {
    /// Path relative to the output directory, `bpf/<file>.o`.
    pub path: String,
    pub bytes: Vec<u8>,
    pub stats: Vec<FunctionStats>,
}

#[derive(Debug, Clone)]
pub struct CompileOutput {
    pub manifest: Manifest,
    pub objects: Vec<CompiledObject>,
}

/// Object file name for an endpoint: its name with characters outside `[A-Za-z0-9._-]` as `_`.
pub fn object_path(endpoint_name: &str) -> String {
    let file: String = endpoint_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("bpf/{file}.o")
}

/// Whether the shared maps are pinned by name (the deployable objects) or private to the loaded
/// object (for executing one program in isolation, as `ciliumc trace` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapPinning {
    ByName,
    Private,
}

/// One endpoint's object: its two policy programs and the shared maps. With
/// [`MapPinning::Private`] every set stays in code, so the object needs no entries but the
/// ipcache's; see [`endpoint_object_with_maps`] for the deployable form.
pub fn endpoint_object(
    ep: &Endpoint,
    policy: &EndpointPolicy,
    pinning: MapPinning,
) -> Result<(Vec<u8>, Vec<FunctionStats>), CompileError> {
    endpoint_object_with_maps(ep, policy, pinning, None).map(|(bytes, stats, _)| (bytes, stats))
}

/// An endpoint's object bytes, per-function statistics and the programs' own maps.
pub type EndpointObject = (Vec<u8>, Vec<FunctionStats>, Vec<lower::ProgramMap>);

/// [`endpoint_object`], also returning the programs' own maps with their initial entries (only
/// with [`MapPinning::ByName`]: large identity sets then live in maps named per endpoint).
pub fn endpoint_object_with_maps(
    ep: &Endpoint,
    policy: &EndpointPolicy,
    pinning: MapPinning,
    notes: Option<&lower::RuleNotes>,
) -> Result<EndpointObject, CompileError> {
    let options = lower::LowerOptions {
        map_tag: (pinning == MapPinning::ByName).then(|| ep.name.clone()),
        rule_notes: notes.cloned(),
    };
    let mut functions = Vec::new();
    let mut own = Vec::new();
    let mut signatures = Vec::new();
    let mut constants = Vec::new();
    for d in [Direction::Egress, Direction::Ingress] {
        lower::budget::check_policy(policy.direction(d)).map_err(|source| {
            CompileError::Budget {
                endpoint: ep.name.clone(),
                direction: d,
                source,
            }
        })?;
        let lowered = lower::lower_direction_with(ep.identity, policy.direction(d), d, &options)
            .map_err(|source| lower::LowerError::Build {
                endpoint: ep.name.clone(),
                direction: d,
                source,
            })?;
        functions.extend(lowered.functions);
        own.extend(lowered.maps);
        signatures.extend(lowered.signatures);
        constants.extend(lowered.constants);
    }
    let (mut code, stats) =
        codegen::compile_with(&functions, CodegenOptions::default()).map_err(|source| {
            CompileError::Codegen {
                endpoint: ep.name.clone(),
                source,
            }
        })?;
    lower::bind_constants(&mut code, &constants);
    for d in [Direction::Egress, Direction::Ingress] {
        let budget = program_budget(&stats, d);
        lower::budget::check_program(policy.direction(d), &budget).map_err(|source| {
            CompileError::Budget {
                endpoint: ep.name.clone(),
                direction: d,
                source,
            }
        })?;
    }
    let map_defs = maps::shared_map_defs().into_iter().map(|m| match pinning {
        MapPinning::ByName => m,
        MapPinning::Private => m.with_pinning(Pinning::None),
    });
    let bytes = with_signatures(ObjectWriter::new(), &signatures)
        .functions(code)
        .maps(map_defs)
        .maps(own.iter().map(|m| m.def.clone()))
        .write()
        .map_err(|source| CompileError::Elf {
            endpoint: ep.name.clone(),
            source,
        })?;
    Ok((bytes, stats, own))
}

/// One direction's program in an object of its own (benchmarks, tests, `trace`-like tools).
#[derive(Debug, Clone)]
pub struct DirectionObject {
    pub bytes: Vec<u8>,
    /// Per-program maps the object declares, with the initial entries a loader must write.
    pub maps: Vec<(String, maps::Entries)>,
    pub stats: Vec<FunctionStats>,
    /// Predicted verifier budget per program.
    pub budgets: Vec<lower::budget::ProgramBudget>,
}

/// Compiles one direction of a policy into an object holding its program and every map it uses.
/// `tag` names the program's own maps (unique per endpoint in a deployment).
pub fn direction_object(
    local_identity: ciliumc_ir::identity::NumericIdentity,
    policy: &ciliumc_ir::policy::DirectionPolicy,
    direction: Direction,
    tag: &str,
    pinning: MapPinning,
) -> Result<DirectionObject, CompileError> {
    let options = lower::LowerOptions::for_tag(tag);
    direction_object_with(local_identity, policy, direction, tag, &options, pinning)
}

/// [`direction_object`] with lowering options of the caller's (rule annotations, say).
pub fn direction_object_with(
    local_identity: ciliumc_ir::identity::NumericIdentity,
    policy: &ciliumc_ir::policy::DirectionPolicy,
    direction: Direction,
    tag: &str,
    options: &lower::LowerOptions,
    pinning: MapPinning,
) -> Result<DirectionObject, CompileError> {
    let endpoint = || format!("{tag} ({direction})");
    let over_budget = |source| CompileError::Budget {
        endpoint: tag.to_string(),
        direction,
        source,
    };
    lower::budget::check_policy(policy).map_err(over_budget)?;
    let lowered = lower::lower_direction_with(local_identity, policy, direction, options).map_err(
        |source| CompileError::Codegen {
            endpoint: endpoint(),
            source,
        },
    )?;
    let (mut code, stats) = codegen::compile_with(&lowered.functions, CodegenOptions::default())
        .map_err(|source| CompileError::Codegen {
            endpoint: endpoint(),
            source,
        })?;
    lowered.bind(&mut code);
    let budgets = vec![program_budget(&stats, direction)];
    for b in &budgets {
        lower::budget::check_program(policy, b).map_err(over_budget)?;
    }
    let map_defs = maps::shared_map_defs().into_iter().map(|m| match pinning {
        MapPinning::ByName => m,
        MapPinning::Private => m.with_pinning(Pinning::None),
    });
    let own: Vec<_> = lowered.maps.iter().map(|m| m.def.clone()).collect();
    let bytes = with_signatures(ObjectWriter::new(), &lowered.signatures)
        .functions(code)
        .maps(map_defs)
        .maps(own)
        .write()
        .map_err(|source| CompileError::Elf {
            endpoint: endpoint(),
            source,
        })?;
    Ok(DirectionObject {
        bytes,
        maps: lowered
            .maps
            .into_iter()
            .map(|m| (m.def.name, m.entries))
            .collect(),
        stats,
        budgets,
    })
}

/// The budget of `direction`'s entry program: its own instructions and those of the subprograms
/// it calls (the kernel counts processed instructions over all of them).
fn program_budget(stats: &[FunctionStats], direction: Direction) -> lower::budget::ProgramBudget {
    let (program, _) = lower::program_for(direction);
    let base = lower::dispatch::parts_base(direction);
    let (mut insns, mut part_insns) = (0, 0);
    for s in stats {
        if s.name == program || lower::parse::is_subprogram(direction, &s.name) {
            insns += s.insns;
        } else if lower::dispatch::Parts::is_part(base, &s.name) {
            part_insns += s.insns;
        }
    }
    lower::budget::predict(program, insns, part_insns)
}

fn with_signatures(
    writer: ObjectWriter,
    signatures: &[(String, ciliumc_targets::elf::FuncSignature)],
) -> ObjectWriter {
    signatures
        .iter()
        .fold(writer, |w, (name, sig)| w.signature(name, sig.clone()))
}

/// One direction's program with every set in code and the shared maps (`pinning` as given), as
/// tests and tools that fill only the shared maps need it.
pub fn inline_direction_object(
    local_identity: ciliumc_ir::identity::NumericIdentity,
    policy: &ciliumc_ir::policy::DirectionPolicy,
    direction: Direction,
    pinning: MapPinning,
) -> Result<Vec<u8>, CompileError> {
    let endpoint = || format!("identity {} ({direction})", local_identity.0);
    let lowered = lower::lower_direction(local_identity, policy, direction).map_err(|source| {
        CompileError::Codegen {
            endpoint: endpoint(),
            source,
        }
    })?;
    let mut code =
        codegen::compile(&lowered.functions).map_err(|source| CompileError::Codegen {
            endpoint: endpoint(),
            source,
        })?;
    lowered.bind(&mut code);
    let map_defs = maps::shared_map_defs().into_iter().map(|m| match pinning {
        MapPinning::ByName => m,
        MapPinning::Private => m.with_pinning(Pinning::None),
    });
    with_signatures(ObjectWriter::new(), &lowered.signatures)
        .functions(code)
        .maps(map_defs)
        .write()
        .map_err(|source| CompileError::Elf {
            endpoint: endpoint(),
            source,
        })
}

/// The ipcache's initial entries (key, value bytes) of the LPM trie, as the manifest lists them.
pub fn ipcache_entries(cluster: &ResolvedCluster) -> Vec<(Vec<u8>, Vec<u8>)> {
    let prefixes = ipcache_prefixes(cluster);
    let mut set: BTreeSet<(Vec<u8>, Vec<u8>)> = BTreeSet::new();
    for (c, id) in &prefixes {
        set.insert((maps::ipcache_key(c), maps::ipcache_value(*id)));
    }
    set.into_iter().collect()
}

/// Every (prefix, identity) the ipcache holds: endpoint and node addresses (host prefixes) and
/// the prefixes rules mention.
pub fn ipcache_prefixes(cluster: &ResolvedCluster) -> Vec<(Cidr, u32)> {
    // One identity per prefix, by `ipcache_identity`'s precedence: an endpoint's over a node's
    // over a CIDR identity of the same prefix, and the first endpoint or node of an address (later
    // inserts win, so each kind goes in reverse).
    let mut out: std::collections::BTreeMap<Cidr, u32> = std::collections::BTreeMap::new();
    for (cidr, id) in &cluster.cidr_identities {
        out.insert(*cidr, id.0);
    }
    for node in cluster.nodes.iter().rev() {
        for a in &node.addresses {
            out.insert(Cidr::host(*a), node.identity.0);
        }
    }
    for ep in cluster.endpoints.iter().rev() {
        if let Some(a) = ep.ipv4 {
            out.insert(Cidr::host(a.into()), ep.identity.0);
        }
        if let Some(a) = ep.ipv6 {
            out.insert(Cidr::host(a.into()), ep.identity.0);
        }
    }
    out.into_iter().collect()
}

/// The identity the datapath's ipcache gives `ip`: the longest matching prefix among endpoint
/// addresses, node addresses and rule prefixes; world when none matches.
pub fn ipcache_identity(
    cluster: &ResolvedCluster,
    ip: std::net::IpAddr,
) -> ciliumc_ir::identity::NumericIdentity {
    use ciliumc_ir::identity::NumericIdentity;
    if let Some(ep) = cluster.endpoints.iter().find(|e| {
        e.ipv4.map(std::net::IpAddr::V4) == Some(ip) || e.ipv6.map(std::net::IpAddr::V6) == Some(ip)
    }) {
        return ep.identity;
    }
    if let Some(node) = cluster.nodes.iter().find(|n| n.addresses.contains(&ip)) {
        return node.identity;
    }
    cluster
        .cidr_identities
        .iter()
        .filter(|(c, _)| c.contains_ip(&ip))
        .max_by_key(|(c, _)| c.prefix_len())
        .map(|(_, id)| *id)
        .unwrap_or(NumericIdentity::WORLD)
}

/// Compiles every endpoint (in name order) and assembles the manifest.
pub fn compile(
    cluster: &ResolvedCluster,
    inputs_digest: &str,
) -> Result<CompileOutput, CompileError> {
    let mut objects = Vec::with_capacity(cluster.endpoints.len());
    let mut endpoints = Vec::with_capacity(cluster.endpoints.len());
    let mut own_maps: Vec<lower::ProgramMap> = Vec::new();
    let notes = lower::rule_notes(&cluster.rule_origins);
    for (ep, policy) in cluster.endpoints.iter().zip(&cluster.policies) {
        let (bytes, stats, own) =
            endpoint_object_with_maps(ep, policy, MapPinning::ByName, Some(&notes))?;
        own_maps.extend(own);
        let path = object_path(&ep.name);
        endpoints.push(ManifestEndpoint {
            name: ep.name.clone(),
            namespace: ep.namespace.clone(),
            pod: ep.pod.clone(),
            node: ep.node.clone(),
            identity: ep.identity.0,
            ipv4: ep.ipv4.map(|a| a.to_string()),
            ipv6: ep.ipv6.map(|a| a.to_string()),
            object: path.clone(),
            interface: cluster.interfaces.get(&ep.name).cloned(),
            programs: [Direction::Egress, Direction::Ingress]
                .into_iter()
                .map(|d| {
                    let (name, hook) = lower::program_for(d);
                    ManifestProgram {
                        name: name.to_string(),
                        section: hook.section().to_string(),
                        hook: match hook {
                            Hook::TcIngress => ManifestHook::TcIngress,
                            Hook::TcEgress => ManifestHook::TcEgress,
                            Hook::Xdp => ManifestHook::Xdp,
                        },
                        direction: d,
                    }
                })
                .collect(),
        });
        objects.push(CompiledObject { path, bytes, stats });
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_string(),
        inputs_digest: inputs_digest.to_string(),
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        identities: cluster
            .identities
            .iter()
            .map(|i| ManifestIdentity {
                id: i.id.0,
                labels: i.labels.iter().map(|l| l.to_string()).collect(),
            })
            .collect(),
        endpoints,
        maps: manifest_maps(cluster)
            .into_iter()
            .chain(
                own_maps
                    .into_iter()
                    .map(|m| maps::manifest_map(&m.def, m.entries)),
            )
            .collect(),
        tail_calls: Vec::new(),
        rules: cluster
            .rule_origins
            .iter()
            .map(|(id, origin)| ManifestRule::from_origin(id.0, origin))
            .collect(),
    };
    Ok(CompileOutput { manifest, objects })
}

/// The shared maps with their initial entries: the ipcache (trie and exact maps) holds every
/// endpoint address, every node address and every prefix a rule mentions.
fn manifest_maps(cluster: &ResolvedCluster) -> Vec<ciliumc_ir::manifest::ManifestMap> {
    let mut entries: std::collections::BTreeMap<String, maps::Entries> =
        maps::ipcache_map_entries(&ipcache_prefixes(cluster))
            .into_iter()
            .map(|(name, mut e)| {
                e.sort();
                e.dedup();
                (name, e)
            })
            .collect();
    maps::shared_map_defs()
        .iter()
        .map(|def| maps::manifest_map(def, entries.remove(&def.name).unwrap_or_default()))
        .collect()
}

/// Writes the output atomically: everything goes to `DIR.tmp-<pid>`, which then replaces `DIR`.
pub fn write_output_dir(out: &CompileOutput, dir: &Path) -> Result<(), CompileError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CompileError::Io { path, source }
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let result = (|| {
        std::fs::create_dir_all(tmp.join("bpf")).map_err(io(&tmp))?;
        for obj in &out.objects {
            let p = tmp.join(&obj.path);
            std::fs::write(&p, &obj.bytes).map_err(io(&p))?;
        }
        let mut json = serde_json::to_string_pretty(&out.manifest)?;
        json.push('\n');
        let p = tmp.join("manifest.json");
        std::fs::write(&p, json).map_err(io(&p))?;
        if dir.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(dir, &old).map_err(io(dir))?;
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
