#!/usr/bin/env bash
# Re-runs every benchmark whose figures the READMEs publish, writing dated results files (machine,
# load, versions, date, command) under benches/results/. Run it on an idle machine; each step prints
# where its results went. Steps:
#   main-job      the README's first command, timed twice per binary (`scripts/bench.sh main-job`;
#                 with BEFORE=/path/to/old/attnviz also that binary, in alternation)
#   fidelity      attention fidelity of every layout setting on MiniLM and the GPT-2 / ViT fixtures
#   compare       t-SNE / UMAP / PCA against openTSNE, umap-learn, scikit-learn, bhtsne (Python venv
#                 made by benches/peers/setup.sh)
#   extract       extraction throughput against PyTorch + transformers (venv made by scripts/devvenv.sh;
#                 several GB)
# With no argument: main-job and fidelity (the steps that need no Python beyond fetching MiniLM).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/attnviz-target}"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(main-job fidelity)
cargo build --quiet -p attn-cli -p attnviz-benches --bins
bin="$CARGO_TARGET_DIR/debug"
minilm="$("$bin/attnviz" fetch-model --print-dir)"
date="$(date -u +%Y-%m-%d)"
mkdir -p benches/results

for step in "${steps[@]}"; do
  case "$step" in
    main-job)
      out="benches/results/main-job-$date.md"
      {
        echo "# main job ($date)"
        echo
        echo "Command: \`attnviz run --out <tmp>\` (the README's first command, model cached), timed with /usr/bin/time -v."
        echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, load at start $(cut -d' ' -f1-3 /proc/loadavg), $(rustc --version), commit $(git rev-parse --short HEAD)."
        echo
        echo "| binary | run | wall s | pipeline s (its own summary) | peak RSS MB |"
        echo "| --- | --- | --- | --- | --- |"
      } > "$out"
      binaries=("now=$bin/attnviz")
      [ -n "${BEFORE:-}" ] && binaries=("before=$BEFORE" "${binaries[@]}")
      for run in $(seq 1 "${RUNS:-2}"); do
        for entry in "${binaries[@]}"; do
          name="${entry%%=*}"; exe="${entry#*=}"
          tmp="$(mktemp -d)"
          /usr/bin/time -v -o "$tmp/time" "$exe" --json run --out "$tmp/ds" > "$tmp/summary.json" 2> "$tmp/stderr" \
            || { cat "$tmp/stderr" >&2; exit 1; }
          wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {split($2, t, ":"); s = 0; for (i = 1; i <= length(t); i++) s = s * 60 + t[i]; print s}' "$tmp/time")
          rss=$(awk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$tmp/time")
          secs=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['seconds'], 1))" "$tmp/summary.json")
          echo "| $name | $run | $wall | $secs | $rss |" >> "$out"
          cp "$tmp/summary.json" "benches/results/main-job-$date-$name-$run.json"
          # The figures of the last run stay in the target directory (e.g. for docs/).
          rm -rf "$CARGO_TARGET_DIR/main-job-figures-$name"
          cp -r "$tmp/ds/figures" "$CARGO_TARGET_DIR/main-job-figures-$name"
          rm -rf "$tmp"
        done
      done
      echo "bench.sh: $out"
      ;;
    fidelity)
      fixtures=attn-extract/tests/fixtures
      "$bin/fidelity" --model "all-MiniLM-L6-v2=$minilm" --model "gpt2-tiny=$fixtures/gpt2_tiny" \
        --model "vit16-tiny=$fixtures/vit16_tiny" --heads "${FIDELITY_HEADS:-2}" --results benches/results
      ;;
    compare)
      cargo run --quiet -p attnviz-benches --bin compare -- --sizes 1000,10000
      ;;
    extract)
      cargo run --quiet -p attnviz-benches --bin extract_compare -- --model "$minilm"
      ;;
    *) echo "bench.sh: unknown step $step (main-job, fidelity, compare, extract)" >&2; exit 2 ;;
  esac
done
