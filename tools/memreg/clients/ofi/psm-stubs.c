// SPDX-License-Identifier: GPL-2.0
/*
 * Stubs for the PSM (InfiniPath) library, which Debian's libfabric.a calls
 * from its psm provider but which no packaged static library provides.
 *
 * libfabric runs each built-in provider's init before it applies its
 * provider filter, and the psm provider's getinfo, reached only when the
 * filter lets psm through, calls psm_error_register_handler() and
 * psm_init(): psm_init() fails here, so psm offers nothing. Every other
 * entry point fails too; none is reached once psm_init() has failed.
 * The real prototypes are in psm.h, which is not packaged either: these
 * definitions only satisfy the linker, and on x86-64 a function that
 * ignores its arguments and returns an int or a pointer is safe to call
 * with any arguments.
 */
#include <stddef.h>

/* Any value but PSM_OK (0) is a failure; 9 is PSM_INTERNAL_ERR in psm.h. */
#define PSM_STUB_ERR	9

#define PSM_STUB(name)				\
	int name(void);				\
	int name(void)				\
	{					\
		return PSM_STUB_ERR;		\
	}

PSM_STUB(psm_am_get_parameters)
PSM_STUB(psm_am_register_handlers)
PSM_STUB(psm_am_reply_short)
PSM_STUB(psm_am_request_short)
PSM_STUB(psm_ep_close)
PSM_STUB(psm_ep_connect)
PSM_STUB(psm_ep_epid_lookup)
PSM_STUB(psm_ep_num_devunits)
PSM_STUB(psm_ep_open)
PSM_STUB(psm_ep_open_opts_get_defaults)
PSM_STUB(psm_init)
PSM_STUB(psm_mq_cancel)
PSM_STUB(psm_mq_finalize)
PSM_STUB(psm_mq_init)
PSM_STUB(psm_mq_ipeek)
PSM_STUB(psm_mq_iprobe)
PSM_STUB(psm_mq_irecv)
PSM_STUB(psm_mq_isend)
PSM_STUB(psm_mq_send)
PSM_STUB(psm_mq_test)

void *psm_epaddr_getctxt(void);
void *psm_epaddr_getctxt(void)
{
	return NULL;
}

void psm_epaddr_setctxt(void);
void psm_epaddr_setctxt(void)
{
}

const char *psm_error_get_string(void);
const char *psm_error_get_string(void)
{
	return "PSM is not available (stub)";
}

/* Called before psm_init(); succeeding here changes nothing. */
int psm_error_register_handler(void);
int psm_error_register_handler(void)
{
	return 0;
}

/* Called only after a successful psm_init(), which never happens. */
int psm_finalize(void);
int psm_finalize(void)
{
	return 0;
}
