// SPDX-License-Identifier: GPL-2.0
/*
 * memreg demo: opens /dev/memreg and shows what the module does.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/memreg.h>

int main(void)
{
	__u32 version = 0;
	int fd = open("/dev/memreg", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "memreg-demo: open /dev/memreg: %s\n", strerror(errno));
		return 1;
	}
	if (ioctl(fd, MEMREG_IOC_GET_VERSION, &version)) {
		fprintf(stderr, "memreg-demo: GET_VERSION: %s\n", strerror(errno));
		return 1;
	}
	printf("memreg-demo: /dev/memreg open, ABI version %u (header says %u)\n",
	       version, MEMREG_ABI_VERSION);
	close(fd);
	return version == MEMREG_ABI_VERSION ? 0 : 1;
}
