#!/usr/bin/env bash
# Session 35, call 6: the lm_head in chunks of rows, each chunk's picks (row_argmax) or draws
# (sample_rows) on the side stream beside the next chunk's GEMM (--head-chunk-rows; 0 is the code
# before: one GEMM, then the picks). Tests (the graph test replays chunks of 5 rows against
# eager), memcheck of the graph test; greedy and sampled (temperature 0.7, top-p 0.9) steps at
# batch 16, 64 and 128 with chunks of 0, 256 and 512 rows, interleaved; bench kernels of a
# sampled batch-64 step with 512.
set -uo pipefail
R=$OUT/r; C=.carry
DEVICE_LIBS='libcupti.so.13*' source tools/device-env.sh "$R"
for b in test_cuda_kernels test_model_vs_fixtures; do gunzip -c $C/$b.gz > /tmp/$b && chmod +x /tmp/$b; done
timeout 150 /tmp/test_cuda_kernels --test-threads=1 > $R/cuda-tests.txt 2>&1; echo "rc=$?" >> $R/cuda-tests.txt
timeout 60 /tmp/test_model_vs_fixtures > $R/fixtures.txt 2>&1; echo "rc=$?" >> $R/fixtures.txt
grep -h "test result\|^rc=\|panicked\|FAILED" $R/cuda-tests.txt $R/fixtures.txt | head
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/test_cuda_kernels --test-threads=1 cuda_graph_replay_equals_eager > $R/memcheck-graph.txt 2>&1; echo "memcheck rc=$?" | tee -a $R/memcheck-graph.txt
grep -h "ERROR SUMMARY" $R/memcheck-graph.txt
M="--preset mini --device cuda --block 32 --prefix 1024 --steps 8 --batch 16,64,128"
S="--temperature 0.7 --top-p 0.9"
for i in 1 2; do
  for c in 0 256 512; do
    timeout 60 $C/dllm bench step $M --head-chunk-rows $c > $R/greedy-$c-$i.txt 2>&1
    timeout 60 $C/dllm bench step $M --head-chunk-rows $c $S > $R/sampled-$c-$i.txt 2>&1
  done
done
for m in greedy sampled; do for c in 0 256 512; do echo "== $m chunks $c"; grep -h "^ *[0-9]" $R/$m-$c-*.txt | awk '{print $1, $5}' | sort -n -s -k1,1 | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print "  "k": "a[k]}' | sort -n; done; done
timeout 60 $C/dllm bench kernels --preset mini --device cuda --block 32 --prefix 1024 --batch 64 $S --head-chunk-rows 512 > $R/k-sampled-512-b64.txt 2>&1
grep -h "lm_head\|sample_rows\|sum of kernel" $R/k-sampled-512-b64.txt | cut -c1-110
grep -l "rror\|panic" $R/*.txt
cd $OUT && tar czf r.tgz r
