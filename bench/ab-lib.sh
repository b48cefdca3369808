# Shared by the before/after scripts (sourced, not run): two git revisions of Pocket built from detached checkouts
# of their own into private directories, so a build of the source tree during the runs cannot swap the binaries
# under them.

# ab_start SCRIPT NAME "$@": with fewer than two revisions in "$@" prints SCRIPT's opening comment as usage and
# exits 2, as it does for a revision git does not know; else sets old and new from the first two arguments and
# results (made absolute, created) from the third or REPO/bench-results/NAME, where REPO is the caller's $repo, and
# installs jq when missing.
ab_start() {
    local script="$1" name="$2"
    shift 2
    if (($# < 2)); then
        awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$script"
        exit 2
    fi
    old="$1" new="$2"
    local rev
    for rev in "$old" "$new"; do
        git -C "$repo" rev-parse --verify -q "$rev^{commit}" >/dev/null || { echo "no such revision: $rev" >&2; exit 2; }
    done
    results="$(mkdir -p "${3:-$repo/bench-results/$name}" && cd "${3:-$repo/bench-results/$name}" && pwd)"
    command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
}

# ab_build REPO WORK OLD NEW BUILD: checks OLD and NEW out into WORK/src-old and WORK/src-new and runs
# `BUILD SOURCE_DIR OUTPUT_DIR` for each (output WORK/old and WORK/new, log WORK/build-old.log ...); exits on failure.
ab_build() {
    local repo="$1" work="$2" old="$3" new="$4" build="$5" v rev
    for v in old new; do
        rev="$old"
        [[ "$v" == new ]] && rev="$new"
        echo "building $v ($rev, $(git -C "$repo" rev-parse --short "$rev"))"
        git -C "$repo" worktree add --detach "$work/src-$v" "$rev" >/dev/null
        "$build" "$work/src-$v" "$work/$v" >"$work/build-$v.log" 2>&1 || { cat "$work/build-$v.log" >&2; exit 1; }
    done
}

# ab_remove_checkouts REPO WORK: removes the checkouts ab_build made (from a cleanup trap; quiet if there are none).
ab_remove_checkouts() {
    local repo="$1" work="$2" v
    for v in old new; do
        if [[ -d "$work/src-$v" ]]; then
            git -C "$repo" worktree remove --force "$work/src-$v" >/dev/null 2>&1 || true
        fi
    done
}

# ab_dotnet_build SOURCE_DIR OUTPUT_DIR: a plain Release build of the CLI (what fanin-ab.sh and tls-ab.sh run).
ab_dotnet_build() {
    dotnet build -c Release "$1/src/Pocket.Cli" -o "$2" -nologo -v q
}
