//! Links the bare-metal ROM loader with its linker script (the ROM part at
//! the reset vector, the code copied to low RAM).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bin=romloader=-T{dir}/romloader.ld");
    println!("cargo:rerun-if-changed=romloader.ld");
    println!("cargo:rerun-if-changed=src/boot.s");
    println!("cargo:rerun-if-changed=src/handoff.s");
}
