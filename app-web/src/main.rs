//! The page: a Leptos CSR app (see `ui`). The model itself runs in the worker binary.

fn main() {
    #[cfg(target_arch = "wasm32")]
    {
        console_error_panic_hook::set_once();
        leptos::mount::mount_to_body(bartleby_web::ui::App);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("bartleby-web runs in the browser: build the site with `trunk build --release`");
}
