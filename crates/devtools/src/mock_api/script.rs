//! The lines generated conversations are made of: a few short dialogues a hotel's agent might have.

/// One exchange: what the caller said, what the agent answered, the intent and entities heard.
pub struct Line {
    pub user: &'static str,
    pub agent: &'static str,
    pub intent: Option<&'static str>,
    pub entities: &'static [(&'static str, &'static str)],
}

const fn line(
    user: &'static str,
    agent: &'static str,
    intent: Option<&'static str>,
    entities: &'static [(&'static str, &'static str)],
) -> Line {
    Line { user, agent, intent, entities }
}

/// The agent always opens; the caller's first input is empty, as in PolyAI's transcripts.
pub const GREETING: Line = line("", "Hello, you're through to the Grand Hotel. How can I help?", None, &[]);

/// Dialogues by topic; a conversation takes the first lines of one, cycling if it needs more.
pub const TOPICS: &[&[Line]] = &[
    &[
        line(
            "I'd like to book a table for two tonight",
            "Of course. What time would you like?",
            Some("book_table"),
            &[("party_size", "2"), ("date", "tonight")],
        ),
        line("Around eight", "I have a table for two at 8 pm. Shall I book it?", None, &[("time", "20:00")]),
        line("Yes please", "Done. Can I take a name for the booking?", Some("confirm"), &[]),
        line("Smith", "Thank you, Mr Smith. See you at eight.", None, &[("name", "Smith")]),
    ],
    &[
        line(
            "What time does the pool open?",
            "The pool opens at 7 am and closes at 9 pm.",
            Some("opening_hours"),
            &[("facility", "pool")],
        ),
        line("And the spa?", "The spa is open from 9 am to 7 pm.", Some("opening_hours"), &[("facility", "spa")]),
        line("Thanks", "You're welcome. Anything else?", None, &[]),
    ],
    &[
        line(
            "I need to cancel my reservation",
            "I can help with that. What's the booking reference?",
            Some("cancel_booking"),
            &[],
        ),
        line(
            "It's GH 4 4 1 9",
            "Thank you. That's the room for the 14th, is that right?",
            None,
            &[("reference", "GH4419")],
        ),
        line("Yes", "It's cancelled. You'll get an email shortly.", Some("confirm"), &[]),
    ],
    &[
        line("Can I speak to someone at reception?", "Of course, let me put you through.", Some("speak_to_human"), &[]),
        line("Thanks", "Transferring you now.", None, &[]),
    ],
];

/// Why and where generated handoffs went.
pub const HANDOFFS: &[(&str, &str)] = &[
    ("caller asked for a person", "+442071234567"),
    ("complaint", "+442071234568"),
    ("group booking over 10 guests", "reception-queue"),
];

pub const VARIANTS: &[(&str, &str)] = &[("VARIANT-1", "Main line"), ("VARIANT-2", "Weekend line")];
