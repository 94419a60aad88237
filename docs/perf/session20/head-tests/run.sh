#!/usr/bin/env bash
# Session 20, after the mechanical commits (slot_sum8, the deep kernel's thread counts, the
# attention rule's helpers; SASS checked identical here): the CUDA suite, the fixtures and
# memcheck of the new test and graph replay on the last commit's build, and one step sweep.
set -uo pipefail
R=$OUT/r; C=.carry
source tools/device-env.sh "$R"
timeout 200 $C/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 $C/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=" $R/cuda-tests.txt $R/fixtures.txt
grep -h "FAILED\|panicked\|failures:" -A3 $R/cuda-tests.txt | head -20
timeout 80 $C/dllm bench step --preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 1,16,64 > $R/step-1k.txt 2>&1
grep -H "^ *[0-9]\|rror" $R/step-1k.txt | sed 's|.*/r/||' | cut -c1-110
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 3 $C/test_cuda_kernels --test-threads=1 moe_norm_both_ways cuda_graph_replay attention_variants > $R/memcheck-tests.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-tests.txt
grep -h "ERROR SUMMARY\|test result" $R/memcheck-tests.txt
cd $OUT && tar czf r.tgz r
