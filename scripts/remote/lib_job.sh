# Sourced by the jobs of scripts/remote/ (encoder_lora_job.sh, lips_job.sh) on the lent machine, where they run in
# WORK with the unpacked pieces (whl/, cache/, data/) and $REPO, the call's copy of the repository (remote.sh).
job_begin() {  # WORK/DONE on any exit, so that a failed step ends the monitor's wait too; log/ and res/ made
  trap 'rc=$?; echo "$(date +%T) job ended, exit $rc"; touch DONE' EXIT
  mkdir -p log res  # as remote.sh makes them (the job also runs without it)
}
job_setup() {  # ASSET ...: the repository copied to WORK/repo (the next call replaces $REPO), whl/*.whl installed
  # into WORK/site, the environment every step uses, and the assets made ready (the LLM converted from its package)
  rm -rf repo && cp -r "$REPO" repo
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target site whl/*.whl
  export PYTHONPATH=$PWD/site:$PWD/repo PYTHON=python3 MMLORA_CACHE=$PWD/cache \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
  python3 -m mmlora.cli assets get "$@" --no-install 2>&1 | { grep -v '%|' || true; }
}
job_pytest() {  # PYTEST="tests/... ...": those tests in WORK/repo (log/pytest.log), at most 300 s
  local w=$PWD
  [ -z "${PYTEST:-}" ] || (cd repo && timeout 300 python3 -m pytest -q -p no:cacheprovider $PYTEST > "$w/log/pytest.log" 2>&1) \
    || echo "pytest: exit $? (log/pytest.log)"
}
