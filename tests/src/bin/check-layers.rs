//! Runs the module-cycle and layering check (`tests::layers`) on a
//! workspace, by default this one: `cargo run -p tests --bin check-layers
//! [-- WORKSPACE_ROOT]`. Prints each problem and exits 1 when there is one.
//! CI runs the same check as the end-to-end test `layers`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(tests::prom::workspace_root);
    let root = root.canonicalize().unwrap_or(root);
    match tests::layers::check_workspace(&root, tests::layers::RULES) {
        Ok(()) => {
            println!(
                "{}: no module cycle, every layer rule holds",
                root.display()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            eprintln!("{}: {} problem(s)", root.display(), problems.len());
            ExitCode::FAILURE
        }
    }
}
