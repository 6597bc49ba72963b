#!/bin/bash
# Distribution alignment: run.sh SEED FRACTION  (store copied from a finished run, its classmix branch removed)
export PYTHONPATH=/work/frozen6 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
W=/work/main/.venv/bin/wsseg; D=/work/exp/data/semi400; cd /work/exp/da
s=$1; f=$2; name=s${s}_f$(echo $f | tr / _)
echo "$(date) start $name"
/usr/bin/time -v $W run semi --data $D --out $name --config s$s.yaml --preset cpu --labelled $f > $name.log 2>&1
echo "$(date) end $name"; grep "^|" $name.log | tail -6
