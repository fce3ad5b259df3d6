//! Marks the tmux-driven test as ignored (`cfg(no_tmux)`) when tmux cannot
//! be found; the test also checks again at run time and says why it skips.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_tmux)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    let found = std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("cargo::rustc-cfg=no_tmux");
    }
}
