// SPDX-License-Identifier: GPL-2.0
/*
 * Ends the QEMU guest with a status: writes it to the isa-debug-exit port,
 * which makes QEMU exit with (status << 1) | 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>
#include <sys/reboot.h>
#include <unistd.h>

#define DEBUG_EXIT_PORT 0xf4

int main(int argc, char **argv)
{
	int status = argc > 1 ? atoi(argv[1]) : 1;

	sync();
	if (ioperm(DEBUG_EXIT_PORT, 1, 1) == 0)
		outb(status & 0x7f, DEBUG_EXIT_PORT);
	perror("guest-exit: isa-debug-exit");
	reboot(RB_AUTOBOOT);
	return 1;
}
