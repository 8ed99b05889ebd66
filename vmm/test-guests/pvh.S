/* PVH test guest: a 32-bit entry announced by the XEN_ELFNOTE_PHYS32_ENTRY note. Entered in
 * 32-bit protected mode, paging off, %ebx = hvm_start_info. Checks the start-info magic,
 * prints a line and the command line over COM1, exits through the debug-exit port (0xf4). */
    .section .note.Xen, "a"
    .balign 4
    .long 4                     /* name size ("Xen\0") */
    .long 4                     /* descriptor size */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start

    .section .text.entry, "ax"
    .globl _start
    .code32
_start:
pvh_start:
    cmpl $0x336ec578, (%ebx)
    jne fail
    mov $msg, %esi
    call puts
    mov 24(%ebx), %esi          /* cmdline_paddr (low half) */
    call puts
    mov $nl, %esi
    call puts
    mov $0, %al
    jmp out
fail:
    mov $3, %al
out:
    mov $0xf4, %dx
    outb %al, %dx
1:  hlt
    jmp 1b

puts:                           /* print the NUL-terminated string at %esi */
    mov $0x3f8, %dx
2:  lodsb
    test %al, %al
    jz 3f
    outb %al, %dx
    jmp 2b
3:  ret

    .section .rodata
msg: .asciz "pvh: start_info ok, cmdline: "
nl:  .asciz "\n"

    .section .note.GNU-stack, "", @progbits
