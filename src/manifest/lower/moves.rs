//! `import` blocks (adopt a template the gateway holds) and `moved` blocks
//! (rename what the state records).

use super::*;

/// The `import` blocks: each names a template of the manifests and a
/// well-formed template id, each address and id once.
pub(super) fn lower_imports(ctx: &mut Ctx, desired: &Desired) -> BTreeMap<Address, Import> {
    let mut out: BTreeMap<Address, Import> = BTreeMap::new();
    let mut ids: BTreeMap<String, Address> = BTreeMap::new();
    for (i, (_, m)) in ctx.files.iter().enumerate() {
        for (j, b) in m.import.iter().flatten().enumerate() {
            let at = At::new(i, format!("import[{j}]"));
            let to: Address = match b.to.parse() {
                Ok(a) => a,
                Err(e) => {
                    ctx.report(&at, "to", e);
                    continue;
                }
            };
            if to.kind != Kind::Template {
                ctx.report(
                    &at,
                    "to",
                    format!("`{to}` is not a template: only templates can be imported (forms and activation URLs are set again, images uploaded)"),
                );
                continue;
            }
            if !desired.resources.contains_key(&to) {
                ctx.report(
                    &at,
                    "to",
                    format!("`{to}` names no template in the manifests\nhint: write the template in the manifests first; the import adopts the gateway's template at that address"),
                );
                continue;
            }
            let id = b.id.trim();
            if !is_gateway_id(id) {
                ctx.report(
                    &at,
                    "id",
                    format!(
                        "`{}` is not a template id",
                        crate::manifest::diag::clip(&b.id, 60)
                    ),
                );
                continue;
            }
            if out.contains_key(&to) {
                ctx.report(&at, "to", format!("`{to}` is imported twice"));
                continue;
            }
            if let Some(other) = ids.get(id) {
                ctx.report(
                    &at,
                    "id",
                    format!("template {id} is already imported to `{other}`"),
                );
                continue;
            }
            ids.insert(id.to_string(), to.clone());
            let written_at = ctx.files[at.file].0.diag(&at.path, "").location();
            out.insert(
                to,
                Import {
                    template_id: id.to_string(),
                    written_at,
                },
            );
        }
    }
    out
}

/// The `moved` blocks of every file: addresses of one sort each, no block
/// moving what another already moves or onto another's target, no cycles.
pub(super) fn lower_moved(ctx: &mut Ctx) -> Vec<Move> {
    let mut blocks: Vec<(At, String, String)> = Vec::new();
    for (i, (_, m)) in ctx.files.iter().enumerate() {
        for (j, b) in m.moved.iter().flatten().enumerate() {
            blocks.push((
                At::new(i, format!("moved[{j}]")),
                b.from.clone(),
                b.to.clone(),
            ));
        }
    }
    let mut out: Vec<(At, Move)> = Vec::new();
    for (at, from_s, to_s) in blocks {
        let from = Movable::parse(&from_s).map_err(|e| ctx.report(&at, "from", e));
        let to = Movable::parse(&to_s).map_err(|e| ctx.report(&at, "to", e));
        let (Ok(from), Ok(to)) = (from, to) else {
            continue;
        };
        if !from.same_sort(&to) {
            ctx.report(
                &at,
                "to",
                format!("`{from}` cannot move to `{to}`: a move keeps the kind (a merchant to a merchant, a template to a template)"),
            );
            continue;
        }
        if from == to {
            ctx.report(&at, "to", format!("`{from}` moves to itself"));
            continue;
        }
        if let Some((_, other)) = out.iter().find(|(_, m)| m.from == from) {
            ctx.report(
                &at,
                "from",
                format!("`{from}` is already moved (to `{}`)", other.to),
            );
            continue;
        }
        if out.iter().any(|(_, m)| m.to == to) {
            ctx.report(&at, "to", format!("two blocks move to `{to}`"));
            continue;
        }
        let written_at = ctx.files[at.file].0.diag(&at.path, "").location();
        out.push((
            at,
            Move {
                from,
                to,
                written_at,
            },
        ));
    }
    // Cycles: following the blocks from any `from` must not come back to it.
    let mut cyclic = Vec::new();
    for (at, m) in &out {
        let mut current = &m.to;
        for _ in 0..out.len() {
            match out.iter().find(|(_, n)| &n.from == current) {
                Some((_, n)) if n.to == m.from => {
                    cyclic.push((at.clone(), m.from.clone()));
                    break;
                }
                Some((_, n)) => current = &n.to,
                None => break,
            }
        }
    }
    for (at, from) in &cyclic {
        ctx.report(
            at,
            "",
            format!("the moves of `{from}` form a cycle; a rename must end somewhere"),
        );
    }
    if !cyclic.is_empty() {
        return Vec::new();
    }
    out.into_iter().map(|(_, m)| m).collect()
}

/// `moved` blocks against what the manifests declare, as Terraform checks
/// them: a block's `from` must be gone from the manifests ("moved object
/// still exists": renaming it and declaring it again would retire the one
/// and create the other), and where a rename ends (a `to` no other block
/// moves on) must be declared (else the renamed records would be retired at
/// once).
pub(super) fn check_moves(ctx: &mut Ctx, desired: &Desired) {
    let covered = |m: &Movable, a: &Address| m.covers(a);
    for m in &desired.moved {
        let Some((at, _)) = block_at(ctx, m) else {
            continue;
        };
        if let Some(still) = desired.resources.keys().find(|a| covered(&m.from, a)) {
            ctx.report(
                &at,
                "from",
                format!(
                    "`{}` is moved, but the manifests still declare `{still}` (a moved object still exists)\nhint: remove it from the manifests (the block renames its records to `{}`), or remove the block",
                    m.from, m.to
                ),
            );
        }
        // A rename goes on when another block moves what it ends on (a
        // template renamed, then its merchant).
        let goes_on = desired.moved.iter().any(|n| match &m.to {
            Movable::Resource(a) => n.from.covers(a),
            Movable::Merchant(_) => n.from == m.to,
        });
        if !goes_on && !desired.resources.keys().any(|a| covered(&m.to, a)) {
            ctx.report(
                &at,
                "to",
                format!(
                    "`{}` is not declared in the manifests: the records moved there would be retired at once\nhint: declare `{}`, or remove the block and let the plan retire `{}`",
                    m.to, m.to, m.from
                ),
            );
        }
    }
}

/// Where a lowered move was written (its block's place and index).
fn block_at(ctx: &Ctx, m: &Move) -> Option<(At, usize)> {
    for (i, (_, f)) in ctx.files.iter().enumerate() {
        for (j, b) in f.moved.iter().flatten().enumerate() {
            if Movable::parse(&b.from).ok().as_ref() == Some(&m.from)
                && Movable::parse(&b.to).ok().as_ref() == Some(&m.to)
            {
                return Some((At::new(i, format!("moved[{j}]")), j));
            }
        }
    }
    None
}
