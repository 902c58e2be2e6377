/* reasoning_start: where a rendered prompt leaves a thinking model's answer
 * (chat_prompt_reasoning says, reasoning_gate follows it). */
#ifndef MOETIER_REASONING_START_H
#define MOETIER_REASONING_START_H

typedef enum reasoning_start {
    REASONING_CLOSED = 0,   /* no reasoning: the prompt closed it, or the answer continues a text */
    REASONING_OPEN,         /* inside it: the prompt ends with "<think>" (K2.5, thinking on) */
    REASONING_MODEL,        /* the model may open it with its first token (K2-Thinking) */
} reasoning_start;

#endif
