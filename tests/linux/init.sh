#!/bin/sh
# PID 1 of the Linux guest the xtask boots (xtask/src/guest_linux.rs puts it
# at /init in a busybox initramfs). It reports, one tagged line each, what
# the boot checks need, then powers off:
#   GUEST-INIT               init runs (the "Linux prompt" of the figures)
#   GUEST-PCR <bank> <i> <hex>   every PCR of every bank, read through the TPM driver
#   GUEST-EVENTLOG-BEGIN/END the firmware event log, hex (xxd -p) in between
#   GUEST-TPM-READS          time for 50 PCR reads (TPM round trips)
#   GUEST-PROBE ...          with svsm_probe=ADDR on the command line: a
#                            deliberate read of that physical address
#   GUEST-POWEROFF           just before the power-off
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
echo "GUEST-INIT kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"

tpm=/sys/class/tpm/tpm0
if [ -d $tpm ]; then
    for bank in sha1 sha256 sha384 sha512; do
        [ -d $tpm/pcr-$bank ] || continue
        i=0
        while [ $i -lt 24 ]; do
            echo "GUEST-PCR $bank $i $(cat $tpm/pcr-$bank/$i)"
            i=$((i + 1))
        done
    done
    log=/sys/kernel/security/tpm0/binary_bios_measurements
    if [ -r $log ]; then
        echo "GUEST-EVENTLOG-BEGIN"
        xxd -p $log
        echo "GUEST-EVENTLOG-END"
    else
        echo "GUEST-EVENTLOG-MISSING"
    fi
    start=$(cut -d' ' -f1 /proc/uptime)
    i=0
    while [ $i -lt 50 ]; do
        cat $tpm/pcr-sha256/0 > /dev/null
        i=$((i + 1))
    done
    echo "GUEST-TPM-READS count=50 start=$start end=$(cut -d' ' -f1 /proc/uptime)"
else
    echo "GUEST-NO-TPM"
fi

for word in $(cat /proc/cmdline); do
    case $word in
        svsm_probe=*) probe=${word#svsm_probe=} ;;
    esac
done
if [ -n "$probe" ]; then
    echo "GUEST-PROBE reading physical address $probe"
    echo "GUEST-PROBE-VALUE $(devmem $probe 32)"
fi

echo "GUEST-POWEROFF uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
