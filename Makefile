# skvm: build, test and benchmark.
#
#   make demo      set up, build, and run the tiny kernels (README's first command)
#   make test      set up, build, and run every test (README's second command; CI runs it)
#   make build     debug build of skvm        make release   optimised build
#   make guests    assemble the test kernels  make bench     benchmarks (release build)
#   make linux     Debian kernel (bzImage, vmlinux) and a busybox initramfs, from Debian packages
#   make test-linux  the full Linux boot tier (hosts where KVM runs guest kernels natively)
#   make check     host diagnosis (skvm check)
#   make clean

export PATH := /opt/swift/usr/bin:$(PATH)
SWIFT ?= swift
SKVM_DEBUG := .build/debug/skvm
SKVM_RELEASE := .build/release/skvm

.PHONY: all setup build release guests linux test test-linux unit integration bench demo check clean

all: build guests

setup:
	@bash scripts/setup.sh

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

guests:
	$(MAKE) -C guests

linux:
	@bash scripts/linux-assets.sh guests/build/linux

# All tests: unit tests need nothing; integration tests run the built skvm on the
# guests (and skip without /dev/kvm, or fail when SKVM_REQUIRE_KVM=1).
# The release build too: a few tests check what only optimised code promises
# (no heap allocation per disk request or network frame).
test: setup guests linux
	$(SWIFT) build --build-tests
	$(SWIFT) build -c release --product skvm
	$(SWIFT) test --skip-build

# The full-boot tier: Linux to its initramfs and a command. Skips, saying why, on
# PVM hosts, where KVM emulates guest kernel code (docs/pvm.md).
test-linux: setup guests linux
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --filter 'Linux'

unit: build
	$(SWIFT) test --skip IntegrationTests

integration: guests
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --filter IntegrationTests

# Benchmarks (release build): results in bench-results/, each beside its reference
# measured in the same run (the C floor loop; QEMU microvm on the same guest;
# QEMU's virtio-blk-pci and the host's own O_DIRECT on the same image;
# QEMU's virtio-net-pci through the same kind of tap).
bench: setup guests linux release
	@mkdir -p bench-results
	$(SKVM_RELEASE) bench exits --cpu 1 --svg bench-results/exits.svg | tee bench-results/exits.txt
	$(SKVM_RELEASE) bench exits --cpu 1 --json > bench-results/exits.json
	python3 scripts/bench-startup.py --skvm $(SKVM_RELEASE) --linux --json bench-results/startup.json | tee bench-results/startup.txt
	python3 scripts/bench-block.py --skvm $(SKVM_RELEASE) --linux --json bench-results/block.json | tee bench-results/block.txt
	python3 scripts/bench-qcow2.py --skvm $(SKVM_RELEASE) --json bench-results/qcow2.json | tee bench-results/qcow2.txt
	@if [ "$$(id -u)" = 0 ]; then python3 scripts/bench-net.py --skvm $(SKVM_RELEASE) --linux --json bench-results/net.json | tee bench-results/net.txt; \
	 else echo "bench: skipping the network benchmark (needs root for a network namespace and a tap)"; fi

check: build
	$(SKVM_DEBUG) check

# The main job: check the host, then boot Linux to a command (or, on PVM hosts,
# the boot-protocol probe and the Debian kernel up to its banner).
demo: setup guests linux release
	@bash scripts/demo.sh $(SKVM_RELEASE)

clean:
	rm -rf .build .build-* bench-results
	$(MAKE) -C guests clean
	rm -rf guests/build/linux
