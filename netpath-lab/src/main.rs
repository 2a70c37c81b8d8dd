fn main() {
    std::process::exit(netpath_lab::cli::main());
}
