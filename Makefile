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

.PHONY: all run check bench toolchain kernel module guest-progs fmt clean distclean

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

bench:
	@$(SCRIPTS)/bench.sh

fmt: kernel
	@$(SCRIPTS)/rustfmt.sh

clean:
	rm -rf build/module-* build/guest-bin build/initramfs build/*.log

distclean:
	rm -rf build
