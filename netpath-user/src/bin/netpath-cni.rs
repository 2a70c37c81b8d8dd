//! `netpath-cni`: netpath's CNI plugin; everything is in `netpath::cni`.
fn main() {
    std::process::exit(netpath::cni::main());
}
