//! `till schema`: prints the SDL (`--federation`: as a gateway composes it).

/// Prints the SDL.
pub(super) fn run(federation: bool) {
    if federation {
        print!("{}", crate::graphql::federation_sdl());
    } else {
        print!("{}", crate::graphql::sdl());
    }
}
