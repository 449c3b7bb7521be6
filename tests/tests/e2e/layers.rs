//! The module-cycle and layering check over this workspace's real source
//! (`tests::layers`): no crate has a cycle among its top-level modules, and
//! every layer rule of `tests::layers::RULES` holds.

use tests::layers::{check_workspace, RULES};
use tests::prom::workspace_root;

#[test]
fn no_crate_has_a_module_cycle_and_every_layer_rule_holds() {
    if let Err(problems) = check_workspace(&workspace_root(), RULES) {
        panic!(
            "{} problem(s) in the module structure:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}
