# The wide voice set (sourced by scripts/make_wide_speech_corpora.sh and scripts/train_grid.sh): 336 training voices
# (flite and festival training voices + 6 espeak-ng English accents x 55 variants) and the held-out validation and
# test voices of every wide corpus. Sets WIDE_VOICES, WIDE_VAL_VOICES and WIDE_TEST_VOICES (comma-separated).
WIDE_ACCENTS="en en-us en-gb-x-rp en-gb-x-gbclan en-gb-x-gbcwmd en-us-nyc"
WIDE_VARIANTS="m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f5 klatt klatt2 klatt3 klatt4 klatt5 klatt6 Andy Annie Alex Alicia adam anika
antonio aunty belinda benjamin boris caleb david ed edward grandma grandpa iven john linda max michel norbert paul pedro
Mike Michael Lee Hugo Denis Marco Mario Storm Jacky Gene Henrique Diogo"
WIDE_VOICES="flite:kal,flite:kal16,flite:awb,flite:slt,festival:kal_diphone,festival:cmu_us_slt_arctic_hts"
for _a in $WIDE_ACCENTS; do for _v in $WIDE_VARIANTS; do WIDE_VOICES="$WIDE_VOICES,espeak:$_a+$_v"; done; done
unset _a _v
WIDE_VAL_VOICES=espeak:en-gb-scotland,festival:ked_diphone
WIDE_TEST_VOICES=espeak:en-029,espeak:en-us+f4,flite:rms
