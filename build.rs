//! Links the server to the libpython it was built for.
//!
//! pyo3 adds no rpath, and these machines also have Debian's libpython3.11 in the default search
//! path, so without this a binary silently runs a different Python than it was built against.

fn main() {
    let config = pyo3_build_config::get();
    if let Some(lib_dir) = config.lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=WSGO_BUILD_PYTHON={exe}");
    }
    println!(
        "cargo:rustc-env=WSGO_BUILD_PYTHON_VERSION={}.{}",
        config.version().major,
        config.version().minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
