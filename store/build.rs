//! The migrations are embedded by `sqlx::migrate!`; rebuild when they change, or a changed
//! migration would not reach the binaries until something else in the crate changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
