# SPDX-License-Identifier: GPL-2.0
#
# memreg: the two commands are `make run` and `make check`; both set up
# everything they need (packages, bindgen, kernel source and build, QEMU).
# Built artefacts live in build/ (git-ignored). KDIR=/path uses an already
# built Rust-enabled kernel tree instead of the project's own.

SCRIPTS := $(CURDIR)/scripts
export KDIR KERNEL_SERIES

# Program to run in the guest for `make run` and extra files to copy in.
CMD ?= memreg-demo
EXTRA ?=

.PHONY: all run check run-pair check-pair bench bench-host toolchain kernel module guest-progs lib install fmt clean distclean

all: module guest-progs

toolchain:
	@$(SCRIPTS)/toolchain.sh

kernel: toolchain
	@$(SCRIPTS)/build-kernel.sh

module: kernel
	@$(SCRIPTS)/build-module.sh

guest-progs: kernel
	@$(SCRIPTS)/build-guest.sh

run: module guest-progs
	@$(SCRIPTS)/run.sh "$(CMD)" $(EXTRA)

check:
	@$(SCRIPTS)/check.sh

# Two guests on a virtual network: libfabric over soft-iWARP between them,
# with memreg as the memory monitor on both sides.
run-pair:
	@$(SCRIPTS)/pair.sh run

check-pair:
	@$(SCRIPTS)/pair.sh check

bench:
	@$(SCRIPTS)/bench.sh

bench-host:
	@$(SCRIPTS)/bench-host.sh

# libmemreg (tools/lib/memreg) for this machine, into build/libmemreg.
LIB_OUT := $(CURDIR)/build/libmemreg/
lib:
	@$(MAKE) -s -C tools/lib/memreg OUTPUT=$(LIB_OUT) UAPI_DIR=$(CURDIR)/include/uapi

# Installs libmemreg: headers, static and shared library, memreg.pc, man
# pages (PREFIX, default /usr/local, and DESTDIR as usual).
install:
	@$(MAKE) -s -C tools/lib/memreg OUTPUT=$(LIB_OUT) UAPI_DIR=$(CURDIR)/include/uapi install

fmt: kernel
	@$(SCRIPTS)/rustfmt.sh

clean:
	rm -rf build/module-* build/guest-bin build/initramfs build/*.log

distclean:
	rm -rf build
