/* 64-bit entry of the C test guest (Linux 64-bit boot protocol: long mode, paging on,
 * %rsi = boot_params). First thing: the boot-timer write, so the VMM can time guest entry. */
    .section .text.entry, "ax"
    .globl _start
    .code64
_start:
    mov $0xc0000000, %eax       /* boot timer (Firecracker magic: 123) */
    movb $123, (%rax)
    lea stack_top(%rip), %rsp
    mov %rsi, %rdi              /* main(boot_params) */
    call guest_main
1:  hlt
    jmp 1b

    .section .bss
    .balign 16
stack:
    .skip 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
